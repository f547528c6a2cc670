"""The drop-folder daemon (SPEC.md "The daemon"): watch, settle, claim, convert, publish, route.

Modules: :mod:`.notify` (systemd sd_notify), :mod:`.logs` (structlog set-up), :mod:`.watch`
(finding settled drops), :mod:`.claim` (instances and work folders), :mod:`.ledger` (content
hashes of published inputs), :mod:`.jobs` (one drop end to end), :mod:`.service` (the loop),
:mod:`.status` (the status file, and :mod:`.metrics`: Prometheus), :mod:`.survey` (reading the
folders and status files for ``tfdrop status``).
"""

from __future__ import annotations
