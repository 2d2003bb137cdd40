"""`make bench`: the fleet measured against plain Celery, side by side in one run."""
