"""Models: LSTM language model, PreResNet, ResNet-20/18 and VGG-11 for CIFAR (width-configurable)."""
