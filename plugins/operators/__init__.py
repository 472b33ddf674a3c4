"""Mechanics behind the recommendation DAGs: configuration, the trainer-step operator and its
three launchers (``launchers/``), sensors, image checks and Slack notifications.

Airflow puts ``plugins/`` on ``sys.path``, so DAG files import ``operators.<module>``.
The DAG-wide settings (``config``: the environment; ``dag_defaults``; ``params``; ``macros``)
stay in this package rather than one settings module beside it: the operators' factories read
them too, and one package is one import root and one directory to deliver (deploy/).
Nothing here imports the trainer package (images and DAGs deploy apart): the contract with it is
its command line and ``contract.py``, the same file as the trainer's own (docs/architecture.md).
"""
