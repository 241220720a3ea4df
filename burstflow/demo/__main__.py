"""`python -m burstflow.demo` (what `make demo` runs): the four demos in order, no cluster needed."""
import asyncio
import sys

from burstflow.demo import main

sys.exit(asyncio.run(main()))
