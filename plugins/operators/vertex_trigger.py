"""Where tasks deferred by the previous release find their trigger.

A deferred task's trigger is stored in the metadata database by class path; tasks deferred
before the launchers moved name ``operators.vertex_trigger.CancellingTrainingPipelineTrigger``
with the provider trigger's arguments. Kept for one release so a deploy in the middle of a run
strands none of them; new deferrals name :mod:`operators.launchers.vertex_trigger`.
"""

from operators.launchers.vertex_trigger import TrainingPipelineTrigger as CancellingTrainingPipelineTrigger

__all__ = ["CancellingTrainingPipelineTrigger"]
