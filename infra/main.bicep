// Azure infrastructure for the middle-tier API (Linux Consumption, Python 3.11).
//   az deployment group create -g <rg> -f infra/main.bicep -p apiClientId=<id> tenantId=<tid> ...
// Then: func azure functionapp publish <functionAppName>
// The app registrations come first: infra/app-registrations.sh prints the ids this template needs.

@description('Base name; resources are named <prefix>-<kind>-<suffix>.')
param prefix string = 'middletier'
param location string = resourceGroup().location
@description('Tenant id of the app registrations.')
param tenantId string = subscription().tenantId
@description('Application (client) id of the middle-tier API registration.')
param apiClientId string
@description('App ID URI of the API, e.g. api://<apiClientId>.')
param apiAudience string = 'api://${apiClientId}'
@description('Name of the API certificate in Key Vault (imported by app-registrations.sh), or empty to use a federated credential.')
param keyVaultCertificateName string = 'middletier-cert'
@description('Use the managed identity as a federated credential instead of a certificate (no secret anywhere).')
param useFederatedCredential bool = false
@description('Deploy Azure Cache for Redis as the shared token cache (L2). Otherwise the storage account is used.')
param deployRedis bool = false

var suffix = uniqueString(resourceGroup().id)
var storageName = toLower(take('${replace(prefix, '-', '')}st${suffix}', 24))
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: { minimumTlsVersion: 'TLS1_2', allowBlobPublicAccess: false, supportsHttpsTrafficOnly: true }
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
]

resource app 'Microsoft.Web/sites@2023-12-01' = {
  name: '${prefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'Python|3.11'
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      appSettings: concat([
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        { name: 'AzureWebJobsStorage', value: storageConnection }
        { name: 'WEBSITE_CONTENTAZUREFILECONNECTIONSTRING', value: storageConnection }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'AzureAd__Instance', value: environment().authentication.loginEndpoint }
        { name: 'AzureAd__TenantId', value: tenantId }
        { name: 'AzureAd__ClientId', value: apiClientId }
        { name: 'AzureAd__Audience', value: apiAudience }
        { name: 'AzureAd__Scopes', value: 'access_as_user' }
        { name: 'AzureAd__AccessTokenVersions', value: '2.0' }
        { name: 'DownstreamApis__Graph__BaseUrl', value: 'https://graph.microsoft.com/v1.0' }
        { name: 'DownstreamApis__Graph__RelativePath', value: 'me' }
        { name: 'DownstreamApis__Graph__Scopes', value: 'https://graph.microsoft.com/User.Read' }
        // An App Service Key Vault reference: the cache key never appears in settings.
        { name: 'TokenCache__EncryptionKey', value: '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=token-cache-key)' }
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

output functionAppName string = app.name
output functionAppPrincipalId string = app.identity.principalId
output keyVaultName string = vault.name
output apiUrl string = 'https://${app.properties.defaultHostName}/api/me'
