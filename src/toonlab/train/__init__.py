"""The generic GAN trainer and the interface model families implement."""
