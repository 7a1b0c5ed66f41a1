"""`python -m services.payment_service` (see process.py; worker functions must live in an importable module)."""

from services.payment_service.process import main

main()
