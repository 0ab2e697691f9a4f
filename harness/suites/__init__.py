"""The paper-claims suite: many runs over seeds, their sweeps and timings, one claims report."""
