"""Datasets: CIFAR-10 through tensorflow-datasets and the bundled cluttered benchmark."""
