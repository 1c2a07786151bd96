#!/usr/bin/env bash
# App registrations for the middle tier, with the Azure CLI (az login first; needs the
# Application Administrator role, and Privileged Role Administrator for the admin consent).
#
#   infra/app-registrations.sh <display-name-prefix> [<function-app-principal-id>]
#
# Creates: the API (exposes access_as_user, v2 tokens, Graph User.Read delegated + admin consent),
# a desktop public client and a SPA client (both pre-authorized), and — when the function app's
# managed identity principal id is given — a federated credential so the API needs no secret.
set -euo pipefail
prefix=${1:?usage: $0 <display-name-prefix> [function-app-principal-id]}
mi_principal=${2:-}
tenant=$(az account show --query tenantId -o tsv)
graph=00000003-0000-0000-c000-000000000000
user_read=e1fe6dd8-ba31-4d61-89e7-88639da4683d   # Graph delegated permission User.Read

api=$(az ad app create --display-name "$prefix-api" --sign-in-audience AzureADMyOrg --query appId -o tsv)
api_object=$(az ad app show --id "$api" --query id -o tsv)
scope_id=$(uuidgen)
az ad app update --id "$api" --identifier-uris "api://$api"
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/$api_object" --body "{
  \"api\": {\"requestedAccessTokenVersion\": 2,
          \"oauth2PermissionScopes\": [{\"id\": \"$scope_id\", \"value\": \"access_as_user\", \"type\": \"User\",
            \"isEnabled\": true, \"adminConsentDisplayName\": \"Access the middle tier as the user\",
            \"adminConsentDescription\": \"Lets the client call the middle-tier API on behalf of the signed-in user.\"}]}}"
az ad app permission add --id "$api" --api "$graph" --api-permissions "$user_read=Scope"
az ad sp create --id "$api" >/dev/null
az ad app permission admin-consent --id "$api"

desktop=$(az ad app create --display-name "$prefix-desktop" --is-fallback-public-client true \
  --public-client-redirect-uris http://localhost --query appId -o tsv)
spa=$(az ad app create --display-name "$prefix-spa" --query appId -o tsv)
spa_object=$(az ad app show --id "$spa" --query id -o tsv)
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/$spa_object" \
  --body '{"spa": {"redirectUris": ["http://localhost:5173/"]}}'

# Pre-authorize both clients for access_as_user: users are never asked to consent to the API.
az rest --method PATCH --uri "https://graph.microsoft.com/v1.0/applications/$api_object" --body "{
  \"api\": {\"preAuthorizedApplications\": [
    {\"appId\": \"$desktop\", \"delegatedPermissionIds\": [\"$scope_id\"]},
    {\"appId\": \"$spa\", \"delegatedPermissionIds\": [\"$scope_id\"]}]}}"

if [ -n "$mi_principal" ]; then
  az ad app federated-credential create --id "$api" --parameters "{
    \"name\": \"function-app-managed-identity\", \"issuer\": \"https://login.microsoftonline.com/$tenant/v2.0\",
    \"subject\": \"$mi_principal\", \"audiences\": [\"api://AzureADTokenExchange\"]}"
fi

cat <<OUT
tenantId=$tenant
apiClientId=$api
desktopClientId=$desktop
spaClientId=$spa
# Certificate instead of a federated credential:
#   az keyvault certificate create --vault-name <vault> -n middletier-cert -p "\$(az keyvault certificate get-default-policy)"
#   az ad app credential reset --id $api --cert middletier-cert --keyvault <vault> --append
OUT
