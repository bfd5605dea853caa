"""Example services used by demos, the sandbox and tests (not part of the wire contracts)."""
