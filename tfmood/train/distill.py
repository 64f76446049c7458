"""Knowledge distillation: a student trained on its labels mixed with a frozen teacher's scores.

    Distiller(student, teacher, weight=0.5)          a keras.Model: compile and fit it as usual
    distillation_targets(labels, teacher_scores, w)  (1 - w) * labels + w * teacher scores

The loss of a batch is the compiled loss (binary cross-entropy) of the student's scores against
the labels mixed with the teacher's scores on the same inputs (the same random crops, masks and
mixup as the student sees), so the teacher runs frozen, in inference mode, inside the training
step and no scores are stored. Cross-entropy is linear in its target, so this is the hard-label
loss and the loss against the teacher's scores mixed with weights 1 - w and w. `tfmood train`
uses it when a config names a `teacher` (`tfmood.train.fit.TrainConfig`): the Distiller is then
the model that `fit` trains, with the usual callbacks (validation AUCs, early stopping,
checkpoints, backup and resume), and what is saved as the best model is the student alone.
"""

from __future__ import annotations

import keras


def check_distill_weight(weight: float) -> float:
    """The teacher's share of the targets as a float, refused outside [0, 1]."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"distill_weight must be in [0, 1], got {weight}")
    return weight


def distillation_targets(labels, teacher_scores, weight: float):
    """Training targets mixed from the labels and a teacher's scores: (1 - w) y + w t.

    Args:
        labels: (batch, tags) 0/1 labels (or mixup's soft labels).
        teacher_scores: (batch, tags) sigmoid scores of the teacher on the same inputs.
        weight: the teacher's share, in [0, 1] (0: the labels only).
    """
    return (1.0 - weight) * labels + weight * teacher_scores


class Distiller(keras.Model):
    """A student model trained against labels mixed with a frozen teacher's scores.

    The Distiller's outputs are the student's (`predict` and the validation callbacks see the
    student), its trainable weights are the student's, and `save` writes the student alone, so a
    checkpoint of the best epoch is an ordinary model of the student's family that loads with
    safe_mode. `save_weights` (the training backup) keeps both models and the optimizer, so an
    interrupted run resumes. The student's layers are shared: the `student` passed in is trained.

    Args:
        student: the Keras model trained.
        teacher: a Keras model taking the same inputs (e.g. a full VGG-ish model built for any
            length); it is frozen (`trainable = False`).
        weight: the teacher's share of the targets, in [0, 1].
        **kwargs: passed to `keras.Model` (e.g. name).

    Example:
    >>> teacher = load_model("full.keras")  # doctest: +SKIP
    >>> distiller = Distiller(build_micro_model(), teacher, weight=0.5)  # doctest: +SKIP
    >>> distiller.compile(optimizer="adam", loss="binary_crossentropy")  # doctest: +SKIP
    >>> distiller.fit(dataset, epochs=30)  # doctest: +SKIP
    >>> distiller.save("micro.keras")  # the student  # doctest: +SKIP

    Reference:
        Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", 2015; the Keras
        example vision/knowledge_distillation.py.
    """

    def __init__(self, student, teacher, weight: float = 0.5, **kwargs):
        weight = check_distill_weight(weight)
        _check_same_inputs(student, teacher)
        kwargs.setdefault("name", f"{student.name}_distilled")
        super().__init__(**kwargs)
        self.weight = weight
        teacher.trainable = False
        self.student = student
        self.teacher = teacher
        # Both models are built, so is the wrapper (BackupAndRestore needs a built model).
        self.built = student.built and teacher.built

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The compiled loss of the student's scores against `distillation_targets`."""
        teacher_scores = self.teacher(x, training=False)
        target = distillation_targets(
            keras.ops.cast(y, y_pred.dtype), keras.ops.cast(teacher_scores, y_pred.dtype),
            self.weight,
        )  # fmt: skip
        return super().compute_loss(x, target, y_pred, sample_weight, training=training)

    def save(self, filepath, *args, **kwargs):
        """Save the student (the Distiller is only its training wrapper)."""
        return self.student.save(filepath, *args, **kwargs)


def _check_same_inputs(student, teacher) -> None:
    """Refuse a teacher whose fixed input shape differs from the student's (None: any)."""
    for student_input, teacher_input in zip(student.inputs, teacher.inputs):
        for mine, theirs in zip(student_input.shape[1:], teacher_input.shape[1:]):
            if mine is not None and theirs is not None and mine != theirs:
                raise ValueError(
                    f"the teacher {teacher.name!r} takes inputs of shape "
                    f"{tuple(teacher_input.shape[1:])}, the student {student.name!r} "
                    f"{tuple(student_input.shape[1:])}"
                )
