"""Client-side helpers: an HTTPS session that trusts the local CA, and device-code sign-in.

``session()`` sets ``trust_env=False`` on purpose: with it on, ``requests`` lets a machine's
``REQUESTS_CA_BUNDLE`` replace ``Session.verify``, and the local CA would be ignored.
"""
from __future__ import annotations

from typing import Any

import msal
import requests


def session(ca_bundle: str) -> requests.Session:
    s = requests.Session()
    s.trust_env = False
    s.verify = ca_bundle
    return s


def public_client(info: dict[str, Any], app: str = "desktop-client", **kwargs: Any) -> msal.PublicClientApplication:
    return msal.PublicClientApplication(
        info["apps"][app]["client_id"], authority=info["authority"], instance_discovery=False,
        http_client=session(info["ca_bundle"]), **kwargs)


def approve_device_code(info: dict[str, Any], flow: dict[str, Any], user: str, *,
                        otp: bool = True) -> requests.Response:
    """Do what the user does on the verification page: enter the code and sign in."""
    account = info["users"][user]
    form = {"code": flow["user_code"], "username": account["upn"], "password": account["password"]}
    if otp and account.get("mfa_code"):
        form["otp"] = account["mfa_code"]
    return session(info["ca_bundle"]).post(flow["verification_uri"], data=form, timeout=10)


def sign_in(info: dict[str, Any], user: str, scopes: list[str], *, app: msal.PublicClientApplication | None = None,
            claims_challenge: str | None = None) -> dict[str, Any]:
    """A real MSAL device-code flow, with the sign-in page answered as the user would."""
    pca = app or public_client(info)
    flow = pca.initiate_device_flow(scopes=scopes, claims_challenge=claims_challenge)
    if "user_code" not in flow:
        raise RuntimeError(f"device flow did not start: {flow.get('error')}: {flow.get('error_description')}")
    page = approve_device_code(info, flow, user)
    if page.status_code != 200:
        raise RuntimeError(f"sign-in page refused {user}: HTTP {page.status_code}")
    return pca.acquire_token_by_device_flow(flow)
