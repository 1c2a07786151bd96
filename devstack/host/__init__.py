"""A local Azure Functions host that runs the function app as `func start` does (``python -m devstack host``):
``funchost.py`` serves the functions, ``routes.py`` holds the host's start-up checks and route templates,
``worker_telemetry.py`` the Python worker's OpenTelemetry set-up."""
