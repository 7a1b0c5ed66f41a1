"""`python -m services.payment_consumers` (see process.py)."""

from services.payment_consumers.process import main

main()
