"""The security server's message log: a tamper-evident, durable record of every signed message."""
