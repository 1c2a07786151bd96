#!/usr/bin/env bash
# App registrations for the middle tier, with the Azure CLI (az login first; needs the Application
# Administrator role, and Privileged Role Administrator for the tenant-wide consent to Graph).
#
#   infra/app-registrations.sh <display-name-prefix> [<federated-identity-principal-id>]
#
# Creates or completes: the API "<prefix>-api" (App ID URI api://<appId>, v2 tokens, the delegated
# scope access_as_user, the app role MiddleTier.Admin for app-only callers of AdminApi and OrdersApi,
# Graph's delegated User.Read (MiddleTierApi, OBO) and application User.Read.All (AdminApi) with
# tenant-wide consent), a desktop public client and a SPA client (both pre-authorized for
# access_as_user), and, given the principal id of the function app's user-assigned identity (main.bicep's
# output federatedIdentityPrincipalId), a federated credential so that the API needs no secret.
#
# Environment (optional):
#   ORDERS_API_APP_ID  appId of the downstream orders API's registration in this tenant (it exposes the
#                      scope Orders.Read and the app role Orders.Read.All): both are requested and consented
#   SPA_REDIRECT_URI   the SPA's redirect URI (default http://localhost:5173/)
#   TOKEN_EXCHANGE_AUDIENCE  for a cloud other than AzureCloud, AzureUSGovernment, AzureChinaCloud
#
# Idempotent: every step looks first and only adds what is missing, so it can run again at any time
# (a second run with the principal id only adds the federated credential; a run with nothing to do
# changes nothing). Existing apps are found by exact display name; existing scope and role ids are
# kept (Graph refuses to change or drop an enabled one: 400 CannotDeleteOrUpdateEnabledEntitlement);
# consent is a delegated grant (az ad app permission grant) plus an appRoleAssignment per application
# permission, never the deprecated `az ad app permission admin-consent` (a portal API, public cloud only).
# Nothing is hard-coded for the public cloud: Graph and the login endpoint come from `az cloud show`.
set -euo pipefail

prefix=${1:?usage: $0 <display-name-prefix> [federated-identity-principal-id]}
mi_principal=${2:-}
orders_app=${ORDERS_API_APP_ID:-}
spa_redirect=${SPA_REDIRECT_URI:-http://localhost:5173/}
fic_name=function-app-managed-identity
graph_app=00000003-0000-0000-c000-000000000000   # Microsoft Graph's appId, the same in every cloud

api='' api_sp='' desktop='' spa=''   # set by ensure_app / ensure_sp
log() { printf '%s\n' "$*" >&2; }
fail() { log "error: $*"; exit 1; }

tenant=$(az account show --query tenantId -o tsv)
cloud=$(az cloud show --query name -o tsv)
graph_url=$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)
graph_url=${graph_url%/}                    # https://graph.microsoft.com, https://graph.microsoft.us, ...
login=$(az cloud show --query endpoints.activeDirectory -o tsv)
login=${login%/}                            # https://login.microsoftonline.com, ...
case $cloud in                              # a managed identity token's audience, per cloud (Entra ID docs)
  AzureCloud) exchange_audience=api://AzureADTokenExchange ;;
  AzureUSGovernment) exchange_audience=api://AzureADTokenExchangeUSGov ;;
  AzureChinaCloud) exchange_audience=api://AzureADTokenExchangeChina ;;
  *) exchange_audience=${TOKEN_EXCHANGE_AUDIENCE:?cloud $cloud: set TOKEN_EXCHANGE_AUDIENCE} ;;
esac

new_uuid() {
  if command -v uuidgen >/dev/null; then uuidgen | tr '[:upper:]' '[:lower:]'; else cat /proc/sys/kernel/random/uuid; fi
}

# json_append '<JSON array>' '<JSON value>': the array with the value at its end (no jq needed).
json_append() {
  local list=$1 item=$2
  if [ -z "$list" ] || [ "$list" = null ]; then list='[]'; fi
  list=${list%"${list##*[![:space:]]}"}       # trailing whitespace
  list=${list%]}
  case ${list//[[:space:]]/} in
    '[') printf '%s%s]' "$list" "$item" ;;
    *) printf '%s, %s]' "$list" "$item" ;;
  esac
}

# ensure_app VAR DISPLAY-NAME [az ad app create options]: sets VAR to the appId of the app with exactly
# this display name (`az ad app list --display-name` matches a prefix), creating it when there is none.
ensure_app() {
  local var=$1 name=$2 ids id
  shift 2
  ids=$(az ad app list --display-name "$name" --query "[?displayName=='$name'].appId" -o tsv)
  if [ "$(printf '%s' "$ids" | grep -c .)" -gt 1 ]; then
    fail "more than one app registration is named '$name' ($(printf '%s' "$ids" | tr '\n' ' ')); remove the extra ones"
  fi
  if [ -n "$ids" ]; then
    id=$ids
    log "app $name: exists ($id)"
  else
    id=$(az ad app create --display-name "$name" "$@" --query appId -o tsv)
    log "app $name: created ($id)"
  fi
  printf -v "$var" '%s' "$id"
}

# ensure_sp VAR APP-ID: sets VAR to the object id of the app's service principal, creating it if needed.
ensure_sp() {
  local var=$1 app=$2 id
  id=$(az ad sp list --filter "appId eq '$app'" --query "[0].id" -o tsv)
  if [ -z "$id" ]; then
    id=$(az ad sp create --id "$app" --query id -o tsv)
    log "service principal of $app: created ($id)"
  fi
  printf -v "$var" '%s' "$id"
}

# request APP-ID RESOURCE-APP-ID PERMISSION-ID Scope|Role: list the permission in requiredResourceAccess.
request() {
  local have
  have=$(az ad app show --id "$1" \
    --query "requiredResourceAccess[?resourceAppId=='$2'].resourceAccess[] | [?id=='$3'].id | [0]" -o tsv)
  if [ -z "$have" ]; then
    az ad app permission add --id "$1" --api "$2" --api-permissions "$3=$4"
    log "requested $4 $3 of $2"
  fi
}

# consent_delegated RESOURCE-SP-ID RESOURCE-APP-ID SCOPE-VALUE: tenant-wide (AllPrincipals) grant of a
# delegated permission to the API, which OBO needs (users cannot consent for a middle tier).
consent_delegated() {
  local grant_id current
  grant_id=$(az ad app permission list-grants --id "$api" \
    --query "[?resourceId=='$1' && consentType=='AllPrincipals'].id | [0]" -o tsv)
  if [ -z "$grant_id" ]; then
    az ad app permission grant --id "$api" --api "$2" --scope "$3" >/dev/null
    log "consented $3 of $2 for all users"
    return 0
  fi
  current=$(az ad app permission list-grants --id "$api" \
    --query "[?id=='$grant_id'].scope | [0]" -o tsv)
  case " $current " in
    *" $3 "*) ;;
    *) # add the scope to the existing grant (az ad app permission grant would replace every grant of the pair)
      az rest --method PATCH --uri "$graph_url/v1.0/oauth2PermissionGrants/$grant_id" \
        --body "{\"scope\": \"${current:+$current }$3\"}"
      log "consented $3 of $2 for all users (added to the existing grant)" ;;
  esac
}

# consent_app_role RESOURCE-SP-ID APP-ROLE-ID: admin consent to an application permission, which is an
# appRoleAssignment of the API's service principal.
consent_app_role() {
  local have
  have=$(az rest --method GET --uri "$graph_url/v1.0/servicePrincipals/$api_sp/appRoleAssignments" \
    --query "value[?resourceId=='$1' && appRoleId=='$2'].id | [0]" -o tsv)
  if [ -z "$have" ]; then
    az rest --method POST --uri "$graph_url/v1.0/servicePrincipals/$api_sp/appRoleAssignments" \
      --body "{\"principalId\": \"$api_sp\", \"resourceId\": \"$1\", \"appRoleId\": \"$2\"}" >/dev/null
    log "granted application permission $2 of $1"
  fi
}

# --- the API -------------------------------------------------------------------------------------
ensure_app api "$prefix-api" --sign-in-audience AzureADMyOrg
api_object=$(az ad app show --id "$api" --query id -o tsv)
api_uri="api://$api"

have=$(az ad app show --id "$api" --query "identifierUris[?@=='$api_uri'] | [0]" -o tsv)
if [ -z "$have" ]; then
  current=$(az ad app show --id "$api" --query identifierUris -o tsv)
  uris=()
  while IFS= read -r uri; do if [ -n "$uri" ]; then uris+=("$uri"); fi; done <<<"$current"
  az ad app update --id "$api" --identifier-uris ${uris[@]+"${uris[@]}"} "$api_uri"
  log "identifier URI $api_uri: set"
fi

version=$(az ad app show --id "$api" --query api.requestedAccessTokenVersion -o tsv)
if [ "$version" != 2 ]; then
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$api_object" \
    --body '{"api": {"requestedAccessTokenVersion": 2}}'
  log "access tokens: v2"
fi

# idtyp in access tokens: Entra emits it only when the API's registration asks (optional claim). It is
# the most accurate way to tell an app-only token; the app also works without it (no scp, oid == sub).
idtyp=$(az ad app show --id "$api" --query "optionalClaims.accessToken[?name=='idtyp'].name | [0]" -o tsv)
if [ -z "$idtyp" ]; then
  claims=$(az ad app show --id "$api" --query "optionalClaims.accessToken || \`[]\`" -o json)
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$api_object" --body "{\"optionalClaims\": {\"accessToken\": $(
    json_append "$claims" '{"name": "idtyp", "essential": false, "additionalProperties": []}')}}"
  log "optional claim idtyp: added"
fi

# The delegated scope: reuse its id when it exists; only a new scope gets a new id.
scope_id=$(az ad app show --id "$api" --query "api.oauth2PermissionScopes[?value=='access_as_user'].id | [0]" -o tsv)
if [ -z "$scope_id" ]; then
  scope_id=$(new_uuid)
  scopes=$(az ad app show --id "$api" --query api.oauth2PermissionScopes -o json)
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$api_object" --body "{\"api\": {\"oauth2PermissionScopes\": $(
    json_append "$scopes" "{\"id\": \"$scope_id\", \"value\": \"access_as_user\", \"type\": \"User\", \"isEnabled\": true,
      \"adminConsentDisplayName\": \"Access the middle tier as the user\",
      \"adminConsentDescription\": \"Lets the client call the middle-tier API on behalf of the signed-in user.\",
      \"userConsentDisplayName\": \"Access the middle tier as you\",
      \"userConsentDescription\": \"Lets the app call the middle-tier API on your behalf.\"}")}}"
  log "scope access_as_user: added ($scope_id)"
fi

# The app role for app-only callers (AdminApi; OrdersApi as an app), same rule for its id.
role_id=$(az ad app show --id "$api" --query "appRoles[?value=='MiddleTier.Admin'].id | [0]" -o tsv)
if [ -z "$role_id" ]; then
  role_id=$(new_uuid)
  roles=$(az ad app show --id "$api" --query appRoles -o json)
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$api_object" --body "{\"appRoles\": $(
    json_append "$roles" "{\"id\": \"$role_id\", \"value\": \"MiddleTier.Admin\", \"allowedMemberTypes\": [\"Application\"],
      \"isEnabled\": true, \"displayName\": \"Middle-tier administrator\",
      \"description\": \"Apps with this role may read any user (AdminApi) and every order (OrdersApi).\"}")}"
  log "app role MiddleTier.Admin: added ($role_id)"
fi

ensure_sp api_sp "$api"

# Ask for, and consent to, one delegated scope and one application role of a resource API.
permit() {  # permit <resource appId> <scope> <app role>
  local app=$1 scope=$2 role=$3 sp scope_id role_id
  sp=$(az ad sp show --id "$app" --query id -o tsv)
  scope_id=$(az ad sp show --id "$app" --query "oauth2PermissionScopes[?value=='$scope'].id | [0]" -o tsv)
  role_id=$(az ad sp show --id "$app" --query "appRoles[?value=='$role'].id | [0]" -o tsv)
  if [ -z "$scope_id" ] || [ -z "$role_id" ]; then
    fail "the API $app must expose the scope $scope and the app role $role"
  fi
  request "$api" "$app" "$scope_id" Scope
  request "$api" "$app" "$role_id" Role
  consent_delegated "$sp" "$app" "$scope"
  consent_app_role "$sp" "$role_id"
}

# Microsoft Graph: delegated User.Read (MiddleTierApi, OBO), application User.Read.All (AdminApi).
permit "$graph_app" User.Read User.Read.All

# The orders API (OrdersApi): delegated Orders.Read (users, OBO), application Orders.Read.All (apps).
if [ -n "$orders_app" ]; then
  permit "$orders_app" Orders.Read Orders.Read.All
else
  log "ORDERS_API_APP_ID is not set: OrdersApi's permissions on the orders API are not requested"
fi

# --- the clients ---------------------------------------------------------------------------------
ensure_app desktop "$prefix-desktop" --is-fallback-public-client true --public-client-redirect-uris http://localhost
ensure_app spa "$prefix-spa"
have=$(az ad app show --id "$spa" --query "spa.redirectUris[?@=='$spa_redirect'] | [0]" -o tsv)
if [ -z "$have" ]; then
  spa_object=$(az ad app show --id "$spa" --query id -o tsv)
  redirects=$(az ad app show --id "$spa" --query spa.redirectUris -o json)
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$spa_object" \
    --body "{\"spa\": {\"redirectUris\": $(json_append "$redirects" "\"$spa_redirect\"")}}"
  log "SPA redirect URI $spa_redirect: added"
fi

# Pre-authorize both clients for access_as_user: users are never asked to consent to the API.
missing=
for client in "$desktop" "$spa"; do
  have=$(az ad app show --id "$api" --query \
    "api.preAuthorizedApplications[?appId=='$client'] | [0].delegatedPermissionIds | [?@=='$scope_id'] | [0]" -o tsv)
  if [ -z "$have" ]; then missing=yes; fi
done
if [ -n "$missing" ]; then
  others=$(az ad app show --id "$api" \
    --query "api.preAuthorizedApplications[?appId!='$desktop' && appId!='$spa']" -o json)
  preauthorized=$(json_append "$others" "{\"appId\": \"$desktop\", \"delegatedPermissionIds\": [\"$scope_id\"]}")
  preauthorized=$(json_append "$preauthorized" "{\"appId\": \"$spa\", \"delegatedPermissionIds\": [\"$scope_id\"]}")
  az rest --method PATCH --uri "$graph_url/v1.0/applications/$api_object" \
    --body "{\"api\": {\"preAuthorizedApplications\": $preauthorized}}"
  log "pre-authorized the desktop and SPA clients"
fi

# --- the federated credential: the function app's user-assigned identity signs in as the API -------
if [ -n "$mi_principal" ]; then
  issuer="$login/$tenant/v2.0"
  wanted=$(printf '%s\t%s\t%s' "$mi_principal" "$issuer" "$exchange_audience")
  have=$(az ad app federated-credential list --id "$api" \
    --query "[?name=='$fic_name'].[subject, issuer, join(',', audiences)]" -o tsv)
  credential="\"issuer\": \"$issuer\", \"subject\": \"$mi_principal\", \"audiences\": [\"$exchange_audience\"],
    \"description\": \"The function app's managed identity\""
  if [ -z "$have" ]; then
    az ad app federated-credential create --id "$api" --parameters "{\"name\": \"$fic_name\", $credential}" >/dev/null
    log "federated credential $fic_name: created"
  elif [ "$have" != "$wanted" ]; then
    az ad app federated-credential update --id "$api" --federated-credential-id "$fic_name" \
      --parameters "{$credential}" >/dev/null
    log "federated credential $fic_name: updated"
  fi
fi

cat <<OUT
tenantId=$tenant
apiClientId=$api
apiAudience=$api_uri
desktopClientId=$desktop
spaClientId=$spa
# Certificate instead of a federated credential (deploy main.bicep with deployerPrincipalId first):
#   az keyvault certificate create --vault-name <vault> -n middletier-cert -p "\$(az keyvault certificate get-default-policy)"
#   az ad app credential reset --id $api --cert middletier-cert --keyvault <vault> --append
OUT
