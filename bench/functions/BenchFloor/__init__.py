"""Benchmark floor: forward to the downstream API with a fixed token; no validation, no OBO.

The cheapest a middle tier can be on this host: one pooled HTTPS call downstream per request, on a session
that reads the environment once (no proxy here: ``trust_env`` off, the CA bundle ``REQUESTS_CA_BUNDLE`` names),
as the app's ``OutboundSession`` does; a default ``requests.Session`` re-reads it per call (~1.9M instructions).
"""
import os

import azure.functions as func
import requests

from shared.outbound import environment_once

_session = requests.Session()
_session.trust_env, _session.verify = environment_once(_session.verify)  # the app's rule (shared/outbound.py)


def main(req: func.HttpRequest) -> func.HttpResponse:
    r = _session.get(os.environ["BENCH_DOWNSTREAM_URL"],
                     headers={"Authorization": "Bearer " + os.environ["BENCH_FIXED_TOKEN"]}, timeout=(3.05, 10))
    return func.HttpResponse(r.content, status_code=r.status_code, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})
