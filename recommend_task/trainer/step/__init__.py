"""The step harness every entry point runs in: arguments and the one-line error (cli), exit
codes, the status record, the launcher lifeline and the pre-flight check. The top layer: it
may import every subpackage; no subpackage imports it (only the entry points do).
"""
