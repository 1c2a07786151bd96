"""What an Entra error (AADSTS code) means for a middle tier, by whose problem it is.

A failed On-Behalf-Of or client-credentials request gets an OAuth ``error`` and ``error_codes``. The ``error``
alone can't tell "the caller's token is bad" from "our own certificate is bad" (both can be ``invalid_grant``
or ``invalid_client``), so the code decides, per Entra's published error table (``reference-error-codes.md``
in MicrosoftDocs/entra-docs; codes missing from it note their source). Each code has exactly one kind; an
unknown one falls back to the ``error``. ``docs/PROTOCOL.md`` has the table with the reasons.
"""
from __future__ import annotations

from enum import Enum
from typing import Iterable


class Kind(Enum):
    CALLER_TOKEN = "caller_token"          # 401 invalid_token: the caller must get a new token
    INTERACTION = "interaction"            # 401 + claims challenge: the user must sign in again
    USER_BLOCKED = "user_blocked"          # 403: sign-in again won't help (policy, assignment, account)
    CREDENTIAL = "credential"              # 500: this app's own credential, which a rotation may fix (reload it)
    CONFIGURATION = "configuration"        # 500: this app's registration or settings
    TRANSIENT = "transient"                # 503: Entra is unavailable; retry later


KINDS: dict[int, Kind] = {
    # The user assertion presented for OBO (the caller's token).
    50013: Kind.CALLER_TOKEN,    # InvalidAssertion: signature, issuer, expired, malformed
    50027: Kind.CALLER_TOKEN,    # InvalidJwtToken
    500131: Kind.CALLER_TOKEN,   # assertion audience does not match the client presenting it
    500133: Kind.CALLER_TOKEN,   # assertion (the user's access token) not within its valid time range
    # The user must interact: MFA, consent, an external challenge, a password or session reset.
    50076: Kind.INTERACTION,     # UserStrongAuthClientAuthNRequired (MFA)
    50079: Kind.INTERACTION,     # UserStrongAuthEnrollmentRequired
    50072: Kind.INTERACTION,     # UserStrongAuthEnrollmentRequiredInterrupt
    50074: Kind.INTERACTION,     # UserStrongAuthClientAuthNRequiredInterrupt
    50078: Kind.INTERACTION,     # UserStrongAuthExpired
    50158: Kind.INTERACTION,     # ExternalSecurityChallenge (terms of use, third-party MFA)
    65001: Kind.INTERACTION,     # DelegationDoesNotExist: consent
    65004: Kind.INTERACTION,     # UserDeclinedConsent
    50055: Kind.INTERACTION,     # InvalidPasswordExpiredPassword
    50173: Kind.INTERACTION,     # FreshTokenNeeded: grant revoked (password change, admin revoke)
    50132: Kind.INTERACTION,     # SsoArtifactInvalidOrExpired
    70043: Kind.INTERACTION,     # BadTokenDueToSignInFrequency
    50097: Kind.INTERACTION,     # DeviceAuthenticationRequired
    # Signing in again does not help: an administrator or a different device must change something.
    53003: Kind.USER_BLOCKED,    # BlockedByConditionalAccess (with a claims value it is a challenge)
    53000: Kind.USER_BLOCKED,    # DeviceNotCompliant
    53001: Kind.USER_BLOCKED,    # DeviceNotDomainJoined
    50005: Kind.USER_BLOCKED,    # DevicePolicyError
    50105: Kind.USER_BLOCKED,    # EntitlementGrantsNotFound: user not assigned to the app
    50053: Kind.USER_BLOCKED,    # IdsLocked
    50057: Kind.USER_BLOCKED,    # UserDisabled
    # This app's own client credential: secret, certificate, assertion or federated credential.
    700024: Kind.CREDENTIAL,     # client assertion not within its valid time range (app clock, expired MI token)
    700027: Kind.CREDENTIAL,     # client assertion failed signature validation
    700023: Kind.CREDENTIAL,     # assertion audience not the realm (SDK docs; the table: InvalidResourcelessScope)
    700021: Kind.CREDENTIAL,     # client assertion application identifier does not match client_id (SDK docs)
    7000215: Kind.CREDENTIAL,    # invalid client secret
    7000222: Kind.CREDENTIAL,    # InvalidClientSecretExpiredKeysProvided
    7000218: Kind.CREDENTIAL,    # neither client_assertion nor client_secret
    70021: Kind.CREDENTIAL,      # no matching federated identity record (Azure DevOps docs)
    # This app's registration or settings: no credential reload can fix these.
    700025: Kind.CONFIGURATION,  # InvalidClientPublicClientWithCredential: the registration is a public client
    700016: Kind.CONFIGURATION,  # UnauthorizedClient_DoesNotMatchRequest: app not found in the tenant
    7000112: Kind.CONFIGURATION,  # UnauthorizedClientApplicationDisabled
    700229: Kind.CONFIGURATION,  # ForbiddenTokenType: only app-only tokens as a federated credential
    70011: Kind.CONFIGURATION,   # InvalidScope
    28000: Kind.CONFIGURATION,   # scope spans more than one resource
    65005: Kind.CONFIGURATION,   # MisconfiguredApplication
    90009: Kind.CONFIGURATION,   # TokenForItselfMissingIdenticalAppIdentifier
    500011: Kind.CONFIGURATION,  # InvalidResourceServicePrincipalNotFound
    500014: Kind.CONFIGURATION,  # InvalidResourceServicePrincipalDisabled
    50001: Kind.CONFIGURATION,   # InvalidResource
    7000114: Kind.CONFIGURATION,  # the app may not make application on-behalf-of calls
    90002: Kind.CONFIGURATION,   # InvalidTenantName
    50049: Kind.CONFIGURATION,   # NoSuchInstanceForDiscovery
    900144: Kind.CONFIGURATION,  # a required parameter is missing
    # Entra itself.
    50000: Kind.TRANSIENT,       # TokenIssuanceError
    90033: Kind.TRANSIENT,       # MsodsServiceUnavailable
    70012: Kind.TRANSIENT,       # MsaServerError
    50196: Kind.TRANSIENT,       # LoopDetected: back off
}

_PRECEDENCE = (Kind.CREDENTIAL, Kind.CONFIGURATION, Kind.CALLER_TOKEN, Kind.INTERACTION, Kind.USER_BLOCKED,
               Kind.TRANSIENT)
_BY_ERROR = {"invalid_client": Kind.CREDENTIAL, "unauthorized_client": Kind.CONFIGURATION,
             "interaction_required": Kind.INTERACTION, "consent_required": Kind.INTERACTION,
             "invalid_scope": Kind.CONFIGURATION, "invalid_resource": Kind.CONFIGURATION,
             "temporarily_unavailable": Kind.TRANSIENT, "throttled": Kind.TRANSIENT}


def classify(error: str, codes: Iterable[int]) -> Kind | None:
    """The kind of an Entra error answer: by its AADSTS codes (the app's own problems first, since no
    caller can fix them), else by its OAuth ``error``; None if unknown (the caller treats it as an upstream refusal)."""
    kinds = {KINDS[c] for c in codes if c in KINDS}
    return next((kind for kind in _PRECEDENCE if kind in kinds), _BY_ERROR.get(error))


# CONFIGURATION codes about the answering tenant's directory, not this app: the resource's service
# principal is missing (no admin consent) or disabled there. Single-tenant, that tenant is ours (a
# configuration error); multi-tenant, it is the caller's (``TenantNotProvisioned``, 403: its admin fixes it).
TENANT_STATE = frozenset({500011, 500014})


def is_tenant_state(codes: Iterable[int]) -> bool:
    """Every configuration code among ``codes`` is one of ``TENANT_STATE`` (and there is one)."""
    config = {c for c in codes if KINDS.get(c) is Kind.CONFIGURATION}
    return bool(config) and config <= TENANT_STATE
