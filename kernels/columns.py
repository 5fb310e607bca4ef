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
