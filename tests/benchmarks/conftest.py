"""The benchmark scripts live in benchmarks/ (not a package): their helpers import as top-level modules."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
