"""``python -m p2pnat``: where the package finds ``p2p-node`` and ``p2p-rendezvous`` (exit 1 if either
is missing). Handy after ``pip install``: the paths should be the ones installed from the wheel."""

from .binary import report

raise SystemExit(report())
