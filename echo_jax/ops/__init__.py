"""Platform-specific forms of operations; `echo_jax.networks` chooses between them inside the program.

`cpu_conv`: the convolution forms that XLA:CPU runs well (its native forms were 2-5x slower).
"""
