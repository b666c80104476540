"""mcdpf: decentralized online training of LSTM regressors over MPI.

Learning is the Markov Chain Distributed Particle Filter: one MPI rank per network node,
particles over the LSTM weights, random walks over the graph, neighbour-only messages.
"""

__version__ = "0.1.0"
