"""Example adapters for the once-only scenario, and the small legacy systems behind them.

Four registers a social-benefits agency asks instead of the citizen, one per backend kind:

- ``population/``: the population register, a SQLite database (sql backend);
- ``tax/``: the tax agency's income service, a legacy HTTP/JSON service (rest backend),
  served by ``python -m adapters.examples.legacy_tax``;
- ``business/``: the business register, a legacy SOAP service (soap backend), served by
  ``python -m adapters.examples.legacy_business``;
- ``land/``: the land registry's parcel export, a CSV file (csv backend).

Every person, company and parcel here is fictional. The same national ids appear in all four,
so one applicant can be looked up everywhere.
"""
