"""A stand-in for the system browser in tests (BROWSER="python tests/fake_browser.py %s").

It does what a user does in a browser: opens the authorize URL, signs in on the emulator's page
as $FAKE_BROWSER_USER (with the one-time code when asked), and follows the redirect back to the
app's loopback listener. Only for the devstack; it trusts the CA in $FAKE_BROWSER_CA.
"""
import os
import re
import sys
import urllib.parse

import requests


def main(url: str) -> None:
    http = requests.Session()
    http.trust_env = False
    http.verify = os.environ["FAKE_BROWSER_CA"]
    user, password, otp = os.environ["FAKE_BROWSER_USER"], os.environ["FAKE_BROWSER_PASSWORD"], os.environ.get(
        "FAKE_BROWSER_OTP", "")
    page = http.get(url, allow_redirects=False, timeout=30)
    if page.status_code != 302:
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        fields = {k: v.replace("&amp;", "&").replace("&quot;", '"').replace("&#x27;", "'").replace("&lt;", "<")
                  .replace("&gt;", ">") for k, v in fields.items()}
        fields.update(username=user, password=password)
        if 'name="otp"' in page.text or fields.get("claims"):
            fields["otp"] = otp
        page = http.post(url.split("?")[0], data=fields, allow_redirects=False, timeout=30)
        if page.status_code == 401 and 'name="otp"' in page.text:
            fields["otp"] = otp
            page = http.post(url.split("?")[0], data=fields, allow_redirects=False, timeout=30)
    plain = requests.Session()
    plain.trust_env = False
    if page.status_code == 302:  # response_mode query/fragment
        location = page.headers["Location"]
        plain.get(location, timeout=30)  # the app's loopback listener on http://localhost:<port>
    else:  # response_mode form_post (MSAL Python's choice): submit the auto-posting form
        action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
        location = action.replace("&amp;", "&")
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text))
        plain.post(location, data=fields, timeout=30)
    assert urllib.parse.urlsplit(location).hostname == "localhost"


if __name__ == "__main__":
    # Like a real browser, return to the caller at once (MSAL waits for webbrowser.open before it
    # serves its loopback listener); the sign-in continues in the background.
    if os.fork() == 0:
        main(sys.argv[1])
