"""The fault suite (marker ``faults``; ``make test`` runs it): crashes, outages, full disks and
network faults under load, each scenario bounded in time and in calls, each asserting what was
kept by reading both security servers' message logs back afterwards (never by trusting counters).

- ``test_kills``: SIGKILL of the consumer's server, the provider's, or the backend, at a seeded
  random moment under load (``RUTA_FAULT_SEED`` changes the seed; a failure names the scenario);
- ``test_group_commit_crash``: a crash inside a group commit's transaction;
- ``test_registry_outage``: registry down until the configuration expires, then back;
- ``test_postgres_restart``: a private PostgreSQL cluster stopped hard under load;
- ``test_log_volume_full``: the log on a small tmpfs of its own, filled up, then freed;
- ``test_network_faults``: the two servers in network namespaces: a partition; delay and stalls
  through a userspace link shaper; and, where the kernel has netem, delay and loss with tc.

The last four need root (``mount``, ``ip netns``, ``initdb`` as ``postgres``) and skip with the
reason where that is missing. Shared pieces live in :mod:`tests.faults.support` (load, a counting
backend, reading a log back, a private PostgreSQL, a small filesystem) and
:mod:`tests.faults.netns`; the servers run in the integration bed
(``tests/integration/security_server/bed.py``). ``soak.py`` is ``make soak``.
"""
