"""Entra ID error answers: the AADSTS catalogue and the body shape clients parse.

MSAL hands 4xx bodies to the caller as dicts and decides on ``error``, ``suberror`` and
``claims``; apps log ``error_codes``. The shape therefore matters as much as the status.
Messages follow the Entra error-code reference (docs/PROTOCOL.md, "Entra errors").
"""
from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

# code -> (HTTP status, error, message template)
CATALOGUE: dict[int, tuple[int, str, str]] = {
    50013: (400, "invalid_grant", "Assertion failed signature validation. [Reason - {reason}]"),
    50027: (400, "invalid_request", "JWT token is invalid or malformed."),
    50076: (400, "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a "
            "new location, you must use multi-factor authentication to access '{resource}'."),
    50079: (400, "invalid_grant",
            "Due to a configuration change made by your administrator, or because you moved to a "
            "new location, you must enroll in multi-factor authentication to access '{resource}'."),
    # Instance discovery (GET /common/discovery/instance): an authority Entra does not know.
    50049: (400, "invalid_instance", "Unknown or invalid instance."),
    50050: (400, "invalid_request", "Request is malformed: invalid or missing '{param}'."),
    50126: (400, "invalid_grant", "Error validating credentials due to invalid username or password."),
    53003: (400, "invalid_grant",
            "Access has been blocked by Conditional Access policies. The access policy does not "
            "allow token issuance."),
    65001: (400, "invalid_grant",
            "The user or administrator has not consented to use the application with ID "
            "'{client_id}' named '{client_name}'. Send an interactive authorization request for "
            "this user and resource."),
    70000: (400, "invalid_grant", "The provided value for the 'code' parameter is not valid."),
    70003: (400, "unsupported_grant_type", "The app requested an unsupported grant type '{grant}'."),
    70008: (400, "invalid_grant", "The provided authorization code or refresh token has expired "
            "due to inactivity. Send a new interactive authorization request for this user and resource."),
    70011: (400, "invalid_scope", "The provided value for the input parameter 'scope' is not valid. "
            "The scope {scope} is not valid."),
    70016: (400, "authorization_pending", "OAuth 2.0 device flow error. Authorization is pending. "
            "Continue polling."),
    70019: (400, "expired_token", "Verification code expired."),
    90002: (400, "invalid_tenant", "Tenant '{tenant}' not found. Check to make sure you have the "
            "correct tenant ID and are signing into the correct cloud. Check with your subscription "
            "administrator, this may happen if there are no active subscriptions for the tenant."),
    90009: (400, "invalid_request", "Application '{client_id}'({client_id}) is requesting a token "
            "for itself. This scenario is supported only if resource is specified using the GUID "
            "based App Identifier."),
    500011: (400, "invalid_resource", "The resource principal named {resource} was not found in "
             "the tenant named {tenant}. This can happen if the application has not been installed "
             "by the administrator of the tenant or consented to by any user in the tenant."),
    500131: (400, "invalid_grant", "Assertion audience does not match the Client app presenting "
             "the assertion. The audience in the assertion was '{aud}' and the expected audience "
             "is '{client_id}' or one of the Application Uris of this application."),
    500133: (400, "invalid_grant", "Assertion is not within its valid time range. Ensure that the "
             "access token is not expired before using it for user assertion, or request a new "
             "token. Current time: {now}, expiry time of assertion {exp}."),
    28000: (400, "invalid_scope", "Provided value for the input parameter scope is not valid "
            "because it contains more than one resource. Scope {scope} is not valid."),
    54005: (400, "invalid_grant", "OAuth2 Authorization code was already redeemed, please retry "
            "with a new valid code or use an existing refresh token."),
    70021: (400, "invalid_request", "No matching federated identity record found for presented assertion. "
            "Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: '{aud}'."),
    700229: (401, "invalid_client", "Forbidden token type. Only app-only tokens may be used as Federated "
             "Identity Credentials for AAD issuer."),
    501481: (400, "invalid_grant", "The Code_Verifier does not match the code_challenge supplied in the "
             "authorization request."),
    9002327: (400, "invalid_request", "Tokens issued for the 'Single-Page Application' client-type may only be "
              "redeemed via cross-origin requests."),
    50011: (400, "invalid_request", "The redirect URI '{redirect_uri}' specified in the request does not match the "
            "redirect URIs configured for the application '{client_id}'."),
    700016: (400, "unauthorized_client", "Application with identifier '{client_id}' was not found "
             "in the directory '{tenant}'. This can happen if the application has not been "
             "installed by the administrator of the tenant or consented to by any user in the "
             "tenant. You may have sent your authentication request to the wrong tenant."),
    700023: (401, "invalid_client", "Client assertion audience claim does not match Realm issuer."),
    700024: (401, "invalid_client", "Client assertion is not within its valid time range."),
    700025: (401, "invalid_client", "Client is public so neither 'client_assertion' nor "
             "'client_secret' should be presented."),
    700027: (401, "invalid_client", "Client assertion failed signature validation. [Reason - {reason}]"),
    7000215: (401, "invalid_client", "Invalid client secret provided. Ensure the secret being sent "
              "in the request is the client secret value, not the client secret ID, for a secret "
              "added to app '{client_id}'."),
    7000218: (401, "invalid_client", "The request body must contain the following parameter: "
              "'client_assertion' or 'client_secret'."),
    7000222: (401, "invalid_client", "The provided client secret keys for app '{client_id}' are "
              "expired. Visit the Azure portal to create new keys for your app: "
              "https://aka.ms/NewClientSecret, or consider using certificate credentials for added "
              "security: https://aka.ms/certCreds."),
    900144: (400, "invalid_request", "The request body must contain the following parameter: "
             "'{param}'."),
    # Throttling and outages, used by fault injection.
    50196: (400, "invalid_grant", "The server terminated an operation because it encountered a "
            "client request loop. Please contact your app vendor."),
    90033: (503, "temporarily_unavailable", "A transient error has occurred. Please try again."),
}

INTERACTION_CODES = frozenset({50076, 50079, 53003})  # MFA and Conditional Access: a claims challenge


class _Blank(dict):
    def __missing__(self, key: str) -> str:
        return ""


@dataclass
class AadError(Exception):
    """One Entra error, raised anywhere in a grant and rendered once by the endpoint."""

    code: int
    params: dict[str, Any] = field(default_factory=dict)
    suberror: str | None = None
    claims: str | None = None
    error: str | None = None  # override the catalogue's error value
    status: int | None = None  # override the catalogue's status

    def __post_init__(self) -> None:
        super().__init__(self.code)

    @property
    def http_status(self) -> int:
        return self.status or CATALOGUE[self.code][0]

    @property
    def error_value(self) -> str:
        return self.error or CATALOGUE[self.code][1]

    def message(self) -> str:
        return CATALOGUE[self.code][2].format_map(_Blank(self.params))

    def body(self, correlation_id: str | None = None) -> dict[str, Any]:
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
        trace_id = str(uuid.uuid4())
        correlation = correlation_id or str(uuid.uuid4())
        description = (f"AADSTS{self.code}: {self.message()}\r\nTrace ID: {trace_id}\r\n"
                       f"Correlation ID: {correlation}\r\nTimestamp: {stamp}")
        body: dict[str, Any] = {
            "error": self.error_value,
            "error_description": description,
            "error_codes": [self.code],
            "timestamp": stamp,
            "trace_id": trace_id,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={self.code}",
        }
        if self.suberror:
            body["suberror"] = self.suberror
        if self.claims:
            body["claims"] = self.claims
        return body
