"""Audio, features, metadata and the tf.data input pipeline.

    audio -> features (log-mel) -> metadata (split TSVs, labels) -> pipeline (tf.data)

Nothing here is imported by the package itself: `tfmood.data.audio` and the tagger's path stay
free of TensorFlow.
"""
