"""The model family: the VGG-ish baseline and its attention/AReLU variants (`vggish`), the
microcontroller model (`micro`), their parameter and FLOP counts (`complexity`) and the import
of the PyTorch MTG-Jamendo baseline (`torch_import`)."""
