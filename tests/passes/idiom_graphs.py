"""Decomposed idioms in IR text, as exporters spell them (shared by the idiom pass tests).

Constants given by reference (@name) are filled with random data by parse_graph.
"""

from __future__ import annotations

LINEAR = """graph @linear {
  %x = input : f32[2, 3, 8]
  %flat = reshape(%x) {shape = [6, 8]} : f32[6, 8]
  %w = constant @w : f32[8, 5]
  %mm = matmul(%flat, %w) : f32[6, 5]
  %b = constant @b : f32[1, 5]
  %biased = add(%b, %mm) : f32[6, 5]
  %y = reshape(%biased) {shape = [2, 3, 5]} : f32[2, 3, 5]
  return "y" = %y
}"""

GELU_ERF = """graph @gelu {
  %x = input : f32[2, 16]
  %sqrt2 = constant dense<1.4142135> : f32[]
  %half = constant dense<0.5> : f32[]
  %one = constant dense<1.0> : f32[]
  %d = div(%x, %sqrt2) : f32[2, 16]
  %e = erf(%d) : f32[2, 16]
  %b = add(%e, %one) : f32[2, 16]
  %h = mul(%x, %half) : f32[2, 16]
  %y = mul(%h, %b) : f32[2, 16]
  return "y" = %y
}"""

# torch's spelling: x*x*x, and the 0.5 split into 0.25 * 2
GELU_TANH = """graph @gelu {
  %x = input : f32[2, 16]
  %xx = mul(%x, %x) : f32[2, 16]
  %x3 = mul(%xx, %x) : f32[2, 16]
  %c = constant dense<0.044715> : f32[]
  %cx3 = mul(%x3, %c) : f32[2, 16]
  %inner = add(%x, %cx3) : f32[2, 16]
  %s = constant dense<0.7978846> : f32[]
  %scaled = mul(%s, %inner) : f32[2, 16]
  %t = tanh(%scaled) : f32[2, 16]
  %one = constant dense<1.0> : f32[]
  %b = add(%one, %t) : f32[2, 16]
  %quarter = constant dense<0.25> : f32[]
  %two = constant dense<2.0> : f32[]
  %h = mul(%x, %quarter) : f32[2, 16]
  %h2 = mul(%two, %h) : f32[2, 16]
  %y = mul(%b, %h2) : f32[2, 16]
  return "y" = %y
}"""

SILU = """graph @silu {
  %x = input : f32[2, 16]
  %s = sigmoid(%x) : f32[2, 16]
  %y = mul(%s, %x) : f32[2, 16]
  return "y" = %y
}"""

LAYER_NORM = """graph @ln {
  %x = input : f32[2, 3, 16]
  %mean = reduce_mean(%x) {axes = [2], keepdim = true} : f32[2, 3, 1]
  %d = sub(%x, %mean) : f32[2, 3, 16]
  %sq = pow(%d) {exponent = 2.0} : f32[2, 3, 16]
  %var = reduce_mean(%sq) {axes = [2], keepdim = true} : f32[2, 3, 1]
  %eps = constant dense<1e-05> : f32[]
  %ve = add(%var, %eps) : f32[2, 3, 1]
  %std = sqrt(%ve) : f32[2, 3, 1]
  %n = div(%d, %std) : f32[2, 3, 16]
  %gamma = constant @gamma : f32[16]
  %g = mul(%n, %gamma) : f32[2, 3, 16]
  %beta = constant @beta : f32[16]
  %y = add(%g, %beta) : f32[2, 3, 16]
  return "y" = %y
}"""

RMS_NORM = """graph @rms {
  %x = input : f32[2, 3, 16]
  %sq = mul(%x, %x) : f32[2, 3, 16]
  %ms = reduce_mean(%sq) {axes = [2], keepdim = true} : f32[2, 3, 1]
  %eps = constant dense<1e-06> : f32[]
  %me = add(%eps, %ms) : f32[2, 3, 1]
  %r = rsqrt(%me) : f32[2, 3, 1]
  %n = mul(%x, %r) : f32[2, 3, 16]
  %gamma = constant @gamma : f32[1, 1, 16]
  %y = mul(%gamma, %n) : f32[2, 3, 16]
  return "y" = %y
}"""

_ROTATE_HALF = """  %lo = slice(%x) {axis = 3, start = 0, step = 1, stop = 4} : f32[1, 2, 4, 4]
  %hi = slice(%x) {axis = 3, start = 4, step = 1, stop = 8} : f32[1, 2, 4, 4]
  %nhi = neg(%hi) : f32[1, 2, 4, 4]
  %rot = concat(%nhi, %lo) {axis = 3} : f32[1, 2, 4, 8]
  %sin = constant @sin : f32[1, 1, 4, 8]
  %rs = mul(%rot, %sin) : f32[1, 2, 4, 8]
"""

ROTARY = f"""graph @rotary {{
  %x = input : f32[1, 2, 4, 8]
  %cos = constant @cos : f32[1, 1, 4, 8]
  %xc = mul(%cos, %x) : f32[1, 2, 4, 8]
{_ROTATE_HALF}  %y = add(%rs, %xc) : f32[1, 2, 4, 8]
  return "y" = %y
}}"""

# a single position: cos is all ones, and simplify has turned x * cos into x
ROTARY_UNIT_COS = f"""graph @rotary {{
  %x = input : f32[1, 2, 4, 8]
{_ROTATE_HALF}  %y = add(%x, %rs) : f32[1, 2, 4, 8]
  return "y" = %y
}}"""

_CAUSAL = ", ".join(
    "0.0" if j <= i else "-1e+09" for i in range(4) for j in range(4)
)  # additive: 0 where key j may be seen from query i

ATTENTION = f"""graph @attention {{
  %q = input : f32[1, 2, 4, 8]
  %k = input : f32[1, 2, 4, 8]
  %v = input : f32[1, 2, 4, 8]
  %kt = transpose(%k) {{perm = [0, 1, 3, 2]}} : f32[1, 2, 8, 4]
  %s = matmul(%q, %kt) : f32[1, 2, 4, 4]
  %d = constant dense<2.828427> : f32[]
  %scaled = div(%s, %d) : f32[1, 2, 4, 4]
  %mask = constant dense<[{_CAUSAL}]> : f32[4, 4]
  %masked = add(%scaled, %mask) : f32[1, 2, 4, 4]
  %p = softmax(%masked) {{axis = 3}} : f32[1, 2, 4, 4]
  %y = matmul(%p, %v) : f32[1, 2, 4, 8]
  return "y" = %y
}}"""

GQA = """graph @gqa {
  %q = input : f32[1, 4, 4, 8]
  %k = input : f32[1, 2, 4, 8]
  %v = input : f32[1, 2, 4, 8]
  %k5 = reshape(%k) {shape = [1, 2, 1, 4, 8]} : f32[1, 2, 1, 4, 8]
  %kx = expand(%k5) {shape = [1, 2, 2, 4, 8]} : f32[1, 2, 2, 4, 8]
  %kr = reshape(%kx) {shape = [1, 4, 4, 8]} : f32[1, 4, 4, 8]
  %v5 = reshape(%v) {shape = [1, 2, 1, 4, 8]} : f32[1, 2, 1, 4, 8]
  %vx = expand(%v5) {shape = [1, 2, 2, 4, 8]} : f32[1, 2, 2, 4, 8]
  %vr = reshape(%vx) {shape = [1, 4, 4, 8]} : f32[1, 4, 4, 8]
  %y = attention(%q, %kr, %vr) {causal = true, scale = 0.35} : f32[1, 4, 4, 8]
  return "y" = %y
}"""

# RMSNorm, linear q/k/v, rotary, GQA attention with an additive causal mask, SiLU MLP
DECODER_BLOCK = f"""graph @block {{
  %h = input : f32[1, 4, 16]
  %sq = pow(%h) {{exponent = 2.0}} : f32[1, 4, 16]
  %ms = reduce_mean(%sq) {{axes = [2], keepdim = true}} : f32[1, 4, 1]
  %eps = constant dense<1e-06> : f32[]
  %me = add(%ms, %eps) : f32[1, 4, 1]
  %r = rsqrt(%me) : f32[1, 4, 1]
  %n = mul(%h, %r) : f32[1, 4, 16]
  %gamma = constant @gamma : f32[16]
  %x = mul(%n, %gamma) : f32[1, 4, 16]
  %wq = constant @wq : f32[16, 16]
  %wk = constant @wk : f32[16, 8]
  %wv = constant @wv : f32[16, 8]
  %q0 = matmul(%x, %wq) : f32[1, 4, 16]
  %k0 = matmul(%x, %wk) : f32[1, 4, 8]
  %v0 = matmul(%x, %wv) : f32[1, 4, 8]
  %q1 = reshape(%q0) {{shape = [1, 4, 2, 8]}} : f32[1, 4, 2, 8]
  %q = transpose(%q1) {{perm = [0, 2, 1, 3]}} : f32[1, 2, 4, 8]
  %k1 = reshape(%k0) {{shape = [1, 4, 1, 8]}} : f32[1, 4, 1, 8]
  %k = transpose(%k1) {{perm = [0, 2, 1, 3]}} : f32[1, 1, 4, 8]
  %v1 = reshape(%v0) {{shape = [1, 4, 1, 8]}} : f32[1, 4, 1, 8]
  %v = transpose(%v1) {{perm = [0, 2, 1, 3]}} : f32[1, 1, 4, 8]
  %cos = constant @cos : f32[1, 1, 4, 8]
  %sin = constant @sin : f32[1, 1, 4, 8]
  %qc = mul(%q, %cos) : f32[1, 2, 4, 8]
  %qlo = slice(%q) {{axis = 3, start = 0, step = 1, stop = 4}} : f32[1, 2, 4, 4]
  %qhi = slice(%q) {{axis = 3, start = 4, step = 1, stop = 8}} : f32[1, 2, 4, 4]
  %qn = neg(%qhi) : f32[1, 2, 4, 4]
  %qrh = concat(%qn, %qlo) {{axis = 3}} : f32[1, 2, 4, 8]
  %qs = mul(%qrh, %sin) : f32[1, 2, 4, 8]
  %qr = add(%qc, %qs) : f32[1, 2, 4, 8]
  %kc = mul(%k, %cos) : f32[1, 1, 4, 8]
  %klo = slice(%k) {{axis = 3, start = 0, step = 1, stop = 4}} : f32[1, 1, 4, 4]
  %khi = slice(%k) {{axis = 3, start = 4, step = 1, stop = 8}} : f32[1, 1, 4, 4]
  %kn = neg(%khi) : f32[1, 1, 4, 4]
  %krh = concat(%kn, %klo) {{axis = 3}} : f32[1, 1, 4, 8]
  %ks = mul(%krh, %sin) : f32[1, 1, 4, 8]
  %kr = add(%kc, %ks) : f32[1, 1, 4, 8]
  %k5 = reshape(%kr) {{shape = [1, 1, 1, 4, 8]}} : f32[1, 1, 1, 4, 8]
  %kx = expand(%k5) {{shape = [1, 1, 2, 4, 8]}} : f32[1, 1, 2, 4, 8]
  %krep = reshape(%kx) {{shape = [1, 2, 4, 8]}} : f32[1, 2, 4, 8]
  %v5 = reshape(%v) {{shape = [1, 1, 1, 4, 8]}} : f32[1, 1, 1, 4, 8]
  %vx = expand(%v5) {{shape = [1, 1, 2, 4, 8]}} : f32[1, 1, 2, 4, 8]
  %vrep = reshape(%vx) {{shape = [1, 2, 4, 8]}} : f32[1, 2, 4, 8]
  %kt = transpose(%krep) {{perm = [0, 1, 3, 2]}} : f32[1, 2, 8, 4]
  %s = matmul(%qr, %kt) : f32[1, 2, 4, 4]
  %scale = constant dense<0.35355338> : f32[]
  %scaled = mul(%s, %scale) : f32[1, 2, 4, 4]
  %mask = constant dense<[{_CAUSAL}]> : f32[4, 4]
  %masked = add(%scaled, %mask) : f32[1, 2, 4, 4]
  %p = softmax(%masked) {{axis = 3}} : f32[1, 2, 4, 4]
  %att = matmul(%p, %vrep) : f32[1, 2, 4, 8]
  %at = transpose(%att) {{perm = [0, 2, 1, 3]}} : f32[1, 4, 2, 8]
  %a = reshape(%at) {{shape = [1, 4, 16]}} : f32[1, 4, 16]
  %wo = constant @wo : f32[16, 16]
  %o = matmul(%a, %wo) : f32[1, 4, 16]
  %res = add(%h, %o) : f32[1, 4, 16]
  %wg = constant @wg : f32[16, 32]
  %g = matmul(%res, %wg) : f32[1, 4, 32]
  %sg = sigmoid(%g) : f32[1, 4, 32]
  %act = mul(%g, %sg) : f32[1, 4, 32]
  %wd = constant @wd : f32[32, 16]
  %down = matmul(%act, %wd) : f32[1, 4, 16]
  %out = add(%res, %down) : f32[1, 4, 16]
  return "out" = %out
}}"""
