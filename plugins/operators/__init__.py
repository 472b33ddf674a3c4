"""Mechanics behind the recommendation DAGs: configuration, the trainer task factory and its
three launchers, sensors, image checks and Slack notifications.

Airflow puts ``plugins/`` on ``sys.path``, so DAG files import ``operators.<module>``.
Nothing here imports the trainer package: the contract with it is its command line.
"""
