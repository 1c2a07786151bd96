"""Entry point. A reader that closes the pipe early (``info --json | head -1``) ends the command quietly with
the shell's SIGPIPE status, and Ctrl-C outside ``up``'s own handling ends it with 130: no traceback either way
(the recipe in Python's signal module documentation, "Note on SIGPIPE")."""
import os
import sys

from .cli import main

try:
    code = main()
    sys.stdout.flush()
except BrokenPipeError:
    # Python flushes stdout again at exit: point it at devnull so that flush cannot fail (and print) too.
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    code = 141  # 128 + SIGPIPE, what the shell reports for a command the pipe ended
except KeyboardInterrupt:
    code = 130
raise SystemExit(code)
