"""Column indices of the integer tables that describe a packed model (built by
``fa_gpu.layout.build_layout``, read by the kernels)."""

# Layout.A_meta columns, one row per modality. A_LEAD: the first modality with the same
# dependencies (fixed-point iteration contracts their summed log-likelihoods once); A_LL: offset
# of that sum in the iteration's scratch
A_O, A_OFF, H_OFF, C_OFF, A_DLO, A_DHI, A_J, A_LEAD, A_LL = range(9)
A_COLS = 9
# Layout.B_meta columns, one row per factor; B_NEXT = offset in B_next, -1 unless B is one-hot
B_S, B_U, B_OFF, B_DLO, B_DHI, B_J, B_NEXT = range(7)
B_COLS = 7
# opts vector passed to a fused step
(OPT_NUM_ITER, OPT_UTILITY, OPT_STATE_INFO, OPT_WA, OPT_WB, OPT_STOCHASTIC, OPT_MARGINAL,
 OPT_LEARN_A, OPT_LEARN_B, OPT_LEARN_D) = range(10)
N_OPTS = 10

# The fields of the kernels' argument bundles, in order (named tuples built by fa_gpu.schema, which
# checks at import that its buffer table holds exactly these). They live here, in the kernel
# sources, because the compiled kernels' on-disk cache is keyed by a hash of these files: a
# change of fields or order must compile afresh, never load code that reads fields by old positions.
STATE_FIELDS = ("obs", "qs", "prior", "qs_prev", "q_pi", "neg_efe", "actions", "prev_actions", "t")
MODEL_FIELDS = ("A", "logA", "H_A", "C", "B", "D", "E", "pA", "pB", "pD", "wA", "wB", "gamma", "alpha", "lr")
TABLES_FIELDS = ("A_meta", "A_deps", "B_meta", "B_deps", "B_next", "S_off", "policies", "branch", "opts")
