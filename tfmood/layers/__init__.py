"""Custom Keras layers of tfmood, registered for `.keras` saving under the package "tfmood".

Importing this package registers every one of them, so `keras.saving.load_model` (with
`safe_mode`) knows them in a fresh process.
"""

from tfmood.layers.arelu import AReLU
from tfmood.layers.attention_augmented_conv import AttentionAugmentedConv2D
from tfmood.layers.export_local_self_attention import ExportLocalSelfAttention
from tfmood.layers.local_self_attention import LocalSelfAttention
from tfmood.layers.log_mel import LogMel
from tfmood.layers.sync_batch_normalization import SyncBatchNormalization

__all__ = [
    "AReLU",
    "AttentionAugmentedConv2D",
    "ExportLocalSelfAttention",
    "LocalSelfAttention",
    "LogMel",
    "SyncBatchNormalization",
]
