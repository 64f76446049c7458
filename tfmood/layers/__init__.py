"""Custom Keras layers of tfmood, registered for `.keras` saving under the package "tfmood"."""

from tfmood.layers.arelu import AReLU
from tfmood.layers.attention_augmented_conv import AttentionAugmentedConv2D
from tfmood.layers.local_self_attention import LocalSelfAttention
from tfmood.layers.sync_batch_normalization import SyncBatchNormalization

__all__ = ["AReLU", "AttentionAugmentedConv2D", "LocalSelfAttention", "SyncBatchNormalization"]
