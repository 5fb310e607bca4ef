"""Column indices of the integer tables that describe a packed model (built by
``fa_gpu.layout.build_layout``, read by the kernels)."""

# Layout.A_meta columns, one row per modality. A_LEAD: the first modality with the same
# dependencies (fixed-point iteration contracts their summed log-likelihoods once); A_LL: offset
# of that sum in the iteration's scratch; A_SP: offset of the shared A's product plan in
# Layout.sparse, -1 for none
A_O, A_OFF, H_OFF, C_OFF, A_DLO, A_DHI, A_J, A_LEAD, A_LL, A_SP = range(10)
A_COLS = 10
# Layout.B_meta columns, one row per factor; B_NEXT = offset in B_next, -1 unless B is one-hot;
# B_SP: offset in Layout.sparse of U_f plan offsets (one per action, -1 for none), -1 for none
B_S, B_U, B_OFF, B_DLO, B_DHI, B_J, B_NEXT, B_SP = range(8)
B_COLS = 8
# A product plan in Layout.sparse (kernels.lanes.matvec_rows), for a shared (R, J) block M:
# [nb, then nb pairs (j, r): the columns whose base (their smallest entry, met at least twice,
# positive) is M[r, j]; then R + 1 row starts (relative to the first entry); then the entries:
# pairs (j, r) of M[o, j] != base_j, r = -1 when column j has no base]. M x = base . x in every
# row, plus each row's entries (M[o, j] - M[r, j]) x_j: noisy identities and sparse matrices cost
# J + R + their deviations instead of R J (fa_gpu.layout.product_plan builds them)
# opts vector passed to a fused step; OPT_AGENT_OFFSET: global index of the engine's agent 0 (a
# shard of a larger population), added to the agent key of the random draws; OPT_ALGO: state
# inference (ALGO_FPI, ALGO_MMP, ALGO_VMP); OPT_HORIZON: steps of the observation window (1 for
# fpi); OPT_CATEGORICAL: observations are distributions (the window's newest slot)
(OPT_NUM_ITER, OPT_UTILITY, OPT_STATE_INFO, OPT_WA, OPT_WB, OPT_STOCHASTIC, OPT_MARGINAL,
 OPT_LEARN_A, OPT_LEARN_B, OPT_LEARN_D, OPT_AGENT_OFFSET, OPT_ALGO, OPT_HORIZON, OPT_CATEGORICAL) = range(14)
N_OPTS = 14
ALGO_FPI, ALGO_MMP, ALGO_VMP = range(3)
# Layout.tile: row offsets inside the agent-lanes kernel's tile (kernels.lanes), each row one
# value per lane (agent) of one quantity: beliefs of the policy roll-out ((T+1) x S; the first S
# are the posterior), partial sums (T+1), predicted outcomes (O_max + 1), joint weights (J_max),
# one step's value, state inference (log prior S, log posterior S, posterior S, summed
# log-likelihoods LL), neg EFE (P), policy posterior (P), 4 per-agent scalars; then the window
# sweep's rows (``kernels.window``; none without a window, Layout.window == 0): beliefs (H x S),
# their next values (H x S), summed log-likelihoods per step (H x LL), actions between the steps
# ((H-1) x F), messages (3 S_max), 3 per-agent scalars (first live slot, prior used, free energy),
# per-lane transition matrices of the actions taken ((H-1) x 2 sum_f S_f J_f, or none: see
# Layout.window_sel_rows); TILE_ROWS: total; TILE_LANES: agents per tile (Layout.lanes)
(TILE_BEL, TILE_ACC, TILE_QO, TILE_WB, TILE_VAL, TILE_LP, TILE_LQ, TILE_Q, TILE_LLS, TILE_G, TILE_PI,
 TILE_RED, TILE_WQ, TILE_WX, TILE_WLL, TILE_WACT, TILE_WMSG, TILE_WLANE, TILE_WSEL, TILE_ROWS,
 TILE_LANES) = range(21)
TILE_COLS = 21
#: a tile's lanes are a multiple of this: LLVM vectorizes a lane loop 8 float32 wide (one AVX
#: register) and interleaves 4, so 32 lanes run its vector body once, none its remainder loop
LANE_STEP = 32
#: the most lanes a tile has, and the bytes a tile may take: each lane loop costs its set-up (alias
#: checks, trip count) once whatever its length, so wider tiles run faster (1.6x from 32 to 128
#: lanes on a 3-factor model) until the tile no longer stays in the core's L2 cache
MAX_LANES, TILE_BYTES = 256, 512 * 1024

# The fields of the kernels' argument bundles, in order (named tuples built by fa_gpu.schema, which
# checks at import that its buffer table holds exactly these). They live here, in the kernel
# sources, because the compiled kernels' on-disk cache is keyed by a hash of these files: a
# change of fields or order must compile afresh, never load code that reads fields by old positions.
STATE_FIELDS = ("obs", "qs", "prior", "qs_prev", "q_pi", "neg_efe", "actions", "prev_actions", "t")
# the window sweep's own bundle (kernels.cpu.window_step_range only): in the state bundle, four more
# arrays in every call's argument struct made the fpi kernel 2x slower (grid5, 2026-12-04)
WINDOW_FIELDS = ("obs_window", "act_window", "qs_window", "vfe")
MODEL_FIELDS = ("A", "logA", "H_A", "C", "B", "D", "E", "pA", "pB", "pD", "wA", "wB", "gamma", "alpha", "lr")
TABLES_FIELDS = ("A_meta", "A_deps", "B_meta", "B_deps", "B_next", "sparse", "S_off", "policies", "branch", "tile",
                 "opts")
