"""The run directory as data that people share, and therefore do not trust.

Reading one never executes anything from it, reads only regular files within a size limit per
kind of file (bounded.py), and a command that writes a new run directory refuses one that
already holds another run's work (occupancy.py), so nothing a user made is lost. The file
names are harness/run_dir/run_record.py's, experiment_file.py's and checkpoint_steps.py's; the
lock is harness/run_dir/lock.py's.
"""
