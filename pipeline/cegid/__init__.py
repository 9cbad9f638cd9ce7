"""Cegid Loop: receipts and invoices deposited into PIA once a day at 20:00 UTC."""
