// Azure infrastructure for the middle-tier API (Linux Consumption, Python 3.11), with every setting
// the three functions read: MiddleTierApi calls `Graph` on the user's behalf, AdminApi `Graph` as the
// app, OrdersApi `Orders` either way. tests/unit/test_infra.py parses this file, takes that list from
// the functions themselves and loads every branch through the app's own parser.
//
//   az deployment group create -g <rg> -f infra/main.bicep -p apiClientId=<api id> \
//     ordersBaseUrl=https://<orders api>/orders ordersAppIdUri=api://<orders api> \
//     spaOrigin=https://<where the SPA is served> tokenCacheKey="$(openssl rand -base64 32)"
// Then: func azure functionapp publish <functionAppName>
// The app registrations come first: infra/app-registrations.sh prints the ids this template needs.
//
// No cloud is hard-coded: the login endpoint and the storage suffix come from environment(), Microsoft
// Graph and the token-exchange audience of federated credentials from the cloud's name (override them
// with graphEndpoint / tokenExchangeAudience for a cloud not listed below).

@description('Base name; resources are named <prefix>-<kind>-<suffix>.')
param prefix string = 'middletier'
param location string = resourceGroup().location
@description('Tenant id of the app registrations.')
param tenantId string = subscription().tenantId
@description('Application (client) id of the middle-tier API registration.')
param apiClientId string
@description('App ID URI of the API, e.g. api://<apiClientId>.')
param apiAudience string = 'api://${apiClientId}'
@description('Origin of the browser app (SPA) that calls the API (CORS), e.g. https://app.contoso.com.')
param spaOrigin string = 'http://localhost:5173'
@description('URL of the downstream orders API that OrdersApi calls (GET), e.g. https://orders.contoso.com/orders.')
param ordersBaseUrl string
@description('App ID URI of the orders API registration, e.g. api://orders: the app asks for <uri>/Orders.Read (OBO) and <uri>/.default (as itself).')
param ordersAppIdUri string
@description('Delegated scope of the orders API that OrdersApi requests on behalf of a user.')
param ordersScope string = 'Orders.Read'
@description('Microsoft Graph root URL (no trailing slash); empty: the one of this cloud. Set it for US Gov DoD (https://dod-graph.microsoft.us) or a cloud not listed in graphEndpoints.')
param graphEndpoint string = ''
@description('Audience of the managed identity token that the federated credential accepts; empty: the one of this cloud.')
param tokenExchangeAudience string = ''
@description('Name of the API certificate in Key Vault (see app-registrations.sh); used unless useFederatedCredential.')
param keyVaultCertificateName string = 'middletier-cert'
@description('Use a managed identity as a federated credential of the API registration instead of a certificate (no secret anywhere).')
param useFederatedCredential bool = false
@description('Deploy Azure Cache for Redis as the shared token cache (L2). Otherwise the storage account is used.')
param deployRedis bool = false
// The token-cache encryption key (AES-256-GCM) becomes the Key Vault secret token-cache-key, created
// here so that no deployment can leave the app without it. Bicep cannot make random bytes (newGuid()
// is allowed only as a parameter default and gives 122 random bits as hex text, not 32 random bytes),
// so the deployer passes them: tokenCacheKey="$(openssl rand -base64 32)". A secure parameter is
// neither logged nor kept in the deployment history; the app reads the secret through a Key Vault
// reference. Each deployment writes a new secret version: entries sealed with the previous key then
// read as misses (one OBO per caller, a warning in the log), so a redeployment is a key rotation.
@secure()
@minLength(44)
@maxLength(44)
@description('32 random bytes, base64 (openssl rand -base64 32): the token-cache encryption key.')
param tokenCacheKey string
// shared/token_cache/l2.py stores each entry's expiry with the blob and ignores an expired one on read, and every
// write refreshes the blob's last-modified time; an entry lives at most TokenCache__SessionLifetimeSeconds
// (1 day by default) after its last write. The lifecycle rule only reclaims space (expired entries and
// stale lock blobs), so it must not be shorter than that lifetime.
@description('Days after its last write that a token-cache blob is deleted (at least the session lifetime, 1 day, plus a day).')
@minValue(2)
param tokenCacheRetentionDays int = 2
@description('Object id of whoever imports the API certificate (a user or a CI principal): gets Key Vault Certificates Officer on the vault. Empty: nobody.')
param deployerPrincipalId string = ''
@allowed([
  'User'
  'ServicePrincipal'
  'Group'
])
param deployerPrincipalType string = 'User'

var suffix = uniqueString(resourceGroup().id)
var storageName = toLower(take('${replace(prefix, '-', '')}st${suffix}', 24))
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
var keyVaultCertificatesOfficer = 'a4417e6f-fecd-4de8-b567-7b0420556985'
var tokenCacheContainer = 'msal-token-cache'
var tokenCacheSecretName = 'token-cache-key'
// Microsoft Graph's root per cloud (learn.microsoft.com/graph/deployments); environment() has only the
// retired Azure AD Graph. Scopes use the same host: https://graph.microsoft.us/User.Read in US Gov.
var graphEndpoints = {
  AzureCloud: 'https://graph.microsoft.com'
  AzureUSGovernment: 'https://graph.microsoft.us'
  AzureChinaCloud: 'https://microsoftgraph.chinacloudapi.cn'
}
var graphUrl = empty(graphEndpoint) ? graphEndpoints[environment().name] : graphEndpoint
// The audience a federated credential must carry for a managed identity's token, per cloud (Entra ID
// docs, "Configure an application to trust a managed identity"); app-registrations.sh uses the same.
var tokenExchangeAudiences = {
  AzureCloud: 'api://AzureADTokenExchange'
  AzureUSGovernment: 'api://AzureADTokenExchangeUSGov'
  AzureChinaCloud: 'api://AzureADTokenExchangeChina'
}
var exchangeAudience = empty(tokenExchangeAudience) ? tokenExchangeAudiences[environment().name] : tokenExchangeAudience

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: { minimumTlsVersion: 'TLS1_2', allowBlobPublicAccess: false, supportsHttpsTrafficOnly: true }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The blob L2 token cache (TokenCache__L2=blob); the app would create it on first use, but it exists
// before the lifecycle rule names it.
resource tokenCacheBlobs 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: tokenCacheContainer
  properties: { publicAccess: 'None' }
}

resource tokenCacheLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          name: 'expire-token-cache'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: { blobTypes: [ 'blockBlob' ], prefixMatch: [ '${tokenCacheContainer}/' ] }
            actions: { baseBlob: { delete: { daysAfterModificationGreaterThan: tokenCacheRetentionDays } } }
          }
        }
      ]
    }
  }
  dependsOn: [ tokenCacheBlobs ]
}

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs-${suffix}'
  location: location
  properties: { sku: { name: 'PerGB2018' }, retentionInDays: 30 }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: workspace.id }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${prefix}-kv-${suffix}', 24)
  location: location
  properties: {
    tenantId: tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    enablePurgeProtection: true
  }
}

// Written through Azure Resource Manager (control plane: the deployer's Contributor is enough, no
// Key Vault data role needed).
resource tokenCacheSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: tokenCacheSecretName
  properties: { value: tokenCacheKey, contentType: 'base64 (32 bytes, AES-256-GCM key)' }
}

// The identity that the API registration trusts as a federated credential (Entra ID accepts only
// user-assigned managed identities there). Created in either mode, so switching needs no new identity;
// app-registrations.sh adds the credential for its principal id (output federatedIdentityPrincipalId).
resource federation 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-${suffix}'
  location: location
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${prefix}-plan-${suffix}'
  location: location
  sku: { name: 'Y1', tier: 'Dynamic' }
  kind: 'functionapp'
  properties: { reserved: true }
}

resource redis 'Microsoft.Cache/redis@2024-03-01' = if (deployRedis) {
  name: '${prefix}-redis-${suffix}'
  location: location
  properties: { sku: { name: 'Basic', family: 'C', capacity: 0 }, enableNonSslPort: false, minimumTlsVersion: '1.2' }
}

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
var credentialSettings = useFederatedCredential ? [
  { name: 'AzureAd__ClientCredentials__0__SourceType', value: 'SignedAssertionFromManagedIdentity' }
  { name: 'AzureAd__ClientCredentials__0__ManagedIdentityClientId', value: federation.properties.clientId }
  { name: 'AzureAd__ClientCredentials__0__TokenExchangeUrl', value: exchangeAudience }
] : [
  { name: 'AzureAd__ClientCredentials__0__SourceType', value: 'KeyVault' }
  { name: 'AzureAd__ClientCredentials__0__KeyVaultUrl', value: vault.properties.vaultUri }
  { name: 'AzureAd__ClientCredentials__0__KeyVaultCertificateName', value: keyVaultCertificateName }
]
var cacheSettings = deployRedis ? [
  { name: 'TokenCache__L2', value: 'redis' }
  { name: 'TokenCache__RedisConnectionString', value: '${redis.properties.hostName}:6380,password=${redis.listKeys().primaryKey},ssl=True,abortConnect=False' }
] : [
  { name: 'TokenCache__L2', value: 'blob' }
  { name: 'TokenCache__BlobContainer', value: tokenCacheContainer }
]

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: '${prefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: {
    // System-assigned: reads Key Vault (certificate, Key Vault references). User-assigned: the federated credential.
    type: 'SystemAssigned, UserAssigned'
    userAssignedIdentities: { '${federation.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'Python|3.11'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      // The SPA calls the API from the browser with a bearer token: no cookies, so no credentials.
      cors: {
        allowedOrigins: [ spaOrigin ]
        supportCredentials: false
      }
      appSettings: concat([
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        { name: 'AzureWebJobsStorage', value: storageConnection }
        { name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', value: storageConnection }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        // One telemetry pipeline (host.json telemetryMode OpenTelemetry): the Python worker configures Azure
        // Monitor and runs each invocation in the host request's trace context. The 4.x worker reads
        // PYTHON_ENABLE_OPENTELEMETRY, the newer library worker PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY.
        { name: 'PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY', value: 'true' }
        { name: 'PYTHON_ENABLE_OPENTELEMETRY', value: 'true' }
        { name: 'AzureAd__Instance', value: environment().authentication.loginEndpoint }
        { name: 'AzureAd__TenantId', value: tenantId }
        { name: 'AzureAd__ClientId', value: apiClientId }
        { name: 'AzureAd__Audience', value: apiAudience }
        { name: 'AzureAd__Scopes', value: 'access_as_user' }
        { name: 'AzureAd__AppPermissions', value: 'MiddleTier.Admin' }
        { name: 'AzureAd__AccessTokenVersions', value: '2.0' }
        // Graph: the user's profile on their behalf (MiddleTierApi); any user as the app (AdminApi, the
        // application permission User.Read.All: a call as the app asks the scopes' resource's /.default).
        { name: 'DownstreamApis__Graph__BaseUrl', value: '${graphUrl}/v1.0' }
        { name: 'DownstreamApis__Graph__RelativePath', value: 'me' }
        { name: 'DownstreamApis__Graph__Scopes', value: '${graphUrl}/User.Read' }
        // OrdersApi: the user's orders on their behalf; everyone's as the app (app role Orders.Read.All).
        { name: 'DownstreamApis__Orders__BaseUrl', value: ordersBaseUrl }
        { name: 'DownstreamApis__Orders__Scopes', value: '${ordersAppIdUri}/${ordersScope}' }
        // An App Service Key Vault reference: the cache key never appears in settings.
        { name: 'TokenCache__EncryptionKey', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${tokenCacheSecret.name})' }
      ], credentialSettings, cacheSettings)
    }
  }
}

// The function app's identity reads secrets (and certificates' secrets) from the vault.
resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, app.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
    principalId: app.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Whoever creates or imports the API certificate (az keyvault certificate create/import) needs a data role.
resource deployerCertificates 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(deployerPrincipalId)) {
  name: guid(vault.id, deployerPrincipalId, keyVaultCertificatesOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultCertificatesOfficer)
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}

output functionAppName string = app.name
output functionAppPrincipalId string = app.identity.principalId
output federatedIdentityPrincipalId string = federation.properties.principalId
output keyVaultName string = vault.name
output apiUrl string = 'https://${app.properties.defaultHostName}/api/me'
