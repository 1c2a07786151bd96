// Sign in with MSAL.js (auth code + PKCE), call the middle tier, show the profile, and answer the
// middle tier's 401 claims challenge (MFA step-up, CAE) by signing in again with those claims.
// Settings come from /config.json next to index.html, so one build serves any tenant.
import { InteractionRequiredAuthError, PublicClientApplication } from "@azure/msal-browser";

const status = (text) => { document.getElementById("status").textContent = text; };

// The challenge is in WWW-Authenticate; cross-origin, a browser only shows that header when the API
// exposes it (Azure's platform CORS cannot), so the problem+json body carries the claims as well.
function claimsFrom(response, problem) {
  if (response.status !== 401) return null;
  const match = (response.headers.get("WWW-Authenticate") || "").match(/claims="([^"]+)"/);
  if (match) return atob(match[1]);
  return problem?.claims ?? null;
}

function show(profile) {
  const list = document.getElementById("profile");
  list.replaceChildren();
  for (const [label, key] of [["Name", "displayName"], ["User principal name", "userPrincipalName"],
                              ["Job title", "jobTitle"], ["Object id", "id"]]) {
    const dt = document.createElement("dt"); dt.textContent = label;
    const dd = document.createElement("dd"); dd.textContent = profile[key] ?? "—"; dd.id = key;
    list.append(dt, dd);
  }
  list.hidden = false;
}

async function main() {
  const config = await (await fetch("/config.json")).json();
  const msal = new PublicClientApplication({
    auth: {
      clientId: config.clientId,
      authority: config.authority,
      knownAuthorities: config.knownAuthorities,   // a custom or local authority: no cloud discovery
      redirectUri: window.location.origin + "/",
    },
    cache: { cacheLocation: "sessionStorage" },
  });
  await msal.initialize();
  const result = await msal.handleRedirectPromise();
  const account = result?.account ?? msal.getAllAccounts()[0];
  const signin = document.getElementById("signin");
  const signout = document.getElementById("signout");
  signin.onclick = () => msal.loginRedirect({ scopes: [config.scope] });
  signout.onclick = () => msal.logoutRedirect({ account });
  if (!account) {
    status("Not signed in.");
    signin.hidden = false;
    return;
  }
  signout.hidden = false;
  let token;
  try {
    token = (await msal.acquireTokenSilent({ scopes: [config.scope], account })).accessToken;
  } catch (err) {
    if (err instanceof InteractionRequiredAuthError) return msal.acquireTokenRedirect({ scopes: [config.scope] });
    throw err;
  }
  status("Calling the middle tier…");
  const response = await fetch(config.apiUrl, { headers: { Authorization: `Bearer ${token}` } });
  const body = await response.json().catch(() => ({}));
  const claims = claimsFrom(response, body);
  if (claims) {
    status("The API asks for a new sign-in…");
    return msal.acquireTokenRedirect({ scopes: [config.scope], account, claims });
  }
  if (!response.ok) {
    status(`The API answered ${response.status}: ${body.detail ?? response.statusText}`);
    return;
  }
  show(body);
  status(`Signed in as ${account.username}`);
}

main().catch((err) => status(`Error: ${err.message}`));
