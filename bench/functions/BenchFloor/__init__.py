"""Benchmark floor: forward to the downstream API with a fixed token; no validation, no OBO.

The cheapest a middle tier can be on this host: one pooled HTTPS call downstream per request.
"""
import os

import azure.functions as func
import requests

_session = requests.Session()


def main(req: func.HttpRequest) -> func.HttpResponse:
    r = _session.get(os.environ["BENCH_DOWNSTREAM_URL"],
                     headers={"Authorization": "Bearer " + os.environ["BENCH_FIXED_TOKEN"]}, timeout=(3.05, 10))
    return func.HttpResponse(r.content, status_code=r.status_code, mimetype="application/json",
                             headers={"Cache-Control": "no-store"})
