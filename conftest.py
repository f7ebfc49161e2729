"""Tests and notebooks under pytest run the seconds-long `smoke` profile unless told otherwise.

Set here, before any notebook kernel starts, so `pytest --nbval` from a bare shell does not
train the `cpu` profile for half an hour. `LABKIT_PROFILE=cpu pytest ...` still overrides it.
"""

import os

os.environ.setdefault("LABKIT_PROFILE", "smoke")
