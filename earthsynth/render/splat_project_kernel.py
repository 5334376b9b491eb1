"""Numba kernels of the CPU backend's projection: world Gaussians -> camera-space depth, 2D means and 2D
covariances, in one pass per (Gaussian, camera), with the analytic backward.

The same arithmetic as the torch path of splat_project (gsplat's `fully_fused_projection`): quaternion
normalised (eps 1e-12, as F.normalize), M = R(q) diag(s), world covariance M M^T, camera-space mean p = R_c mu + t_c
and covariance R_c M M^T R_c^T, perspective Jacobian J at the mean whose x/z, y/z are clamped to the widened field
of view (depths below the near plane replaced by 1), 2D covariance J Sigma_c J^T. What follows (eps2d, conics,
antialiasing compensation, radii) stays in torch on these [C, N] outputs: a handful of elementwise operations.

Why by hand: in torch this is ~60 small operations forward and ~100 backward on [C, N, 3, 3] tensors (batched
3 x 3 products, stacks, broadcasts), ~40 ms for 20k Gaussians on one core; here it is a few milliseconds, and for
the CPU splat backend it was the largest cost after compositing.

Backward, for an upstream gradient G on the symmetric 2D covariance (G_01 = v_cov01 / 2 off the diagonal):
v_J = 2 G J Sigma_c, v_Sigma_c = J^T G J, v_R_c = 2 v_Sigma_c R_c Sigma + v_p mu^T, v_Sigma = R_c^T v_Sigma_c R_c,
v_M = 2 v_Sigma M, then through R(q) and the normalisation. Sums over cameras (per Gaussian) and over Gaussians
(per camera, the viewmats' gradient) run in a fixed order: the bytes do not depend on anything but the inputs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

QUAT_EPS = 1e-12  # F.normalize's eps


@njit(cache=True, nogil=True, inline="always")
def _rotation(qw, qx, qy, qz, rot):
    rot[0, 0], rot[0, 1], rot[0, 2] = 1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy)
    rot[1, 0], rot[1, 1], rot[1, 2] = 2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx)
    rot[2, 0], rot[2, 1], rot[2, 2] = 2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy)


@njit(cache=True, nogil=True, inline="always")
def _world_covariance(quat, scale, q_hat, rot, m, sigma):
    """q_hat (normalised quaternion), rot = R(q_hat), m = rot diag(scale), sigma = m m^T; returns |q| (clamped)."""
    norm = max(math.sqrt(quat[0] ** 2 + quat[1] ** 2 + quat[2] ** 2 + quat[3] ** 2), QUAT_EPS)
    for k in range(4):
        q_hat[k] = quat[k] / norm
    _rotation(q_hat[0], q_hat[1], q_hat[2], q_hat[3], rot)
    for i in range(3):
        for k in range(3):
            m[i, k] = rot[i, k] * scale[k]
    for i in range(3):
        for j in range(3):
            sigma[i, j] = m[i, 0] * m[j, 0] + m[i, 1] * m[j, 1] + m[i, 2] * m[j, 2]
    return norm


@njit(cache=True, nogil=True, inline="always")
def _camera(view, mean, sigma, p, sigma_c, tmp):
    """p = R_c mean + t_c and sigma_c = R_c sigma R_c^T (tmp: scratch 3 x 3)."""
    for i in range(3):
        p[i] = view[i, 0] * mean[0] + view[i, 1] * mean[1] + view[i, 2] * mean[2] + view[i, 3]
        for k in range(3):
            tmp[i, k] = view[i, 0] * sigma[0, k] + view[i, 1] * sigma[1, k] + view[i, 2] * sigma[2, k]
    for i in range(3):
        for j in range(3):
            sigma_c[i, j] = tmp[i, 0] * view[j, 0] + tmp[i, 1] * view[j, 1] + tmp[i, 2] * view[j, 2]


@njit(cache=True, nogil=True, inline="always")
def _clamped(t, z, lim_neg, lim_pos):
    """(t / z clamped to [-lim_neg, lim_pos], d(clamped)/dt, d(clamped)/dz)."""
    u = t / z
    if u < -lim_neg:
        return -lim_neg, 0.0, 0.0
    if u > lim_pos:
        return lim_pos, 0.0, 0.0
    return u, 1.0 / z, -t / (z * z)


@njit(cache=True, nogil=True, inline="always")
def _jacobian(p, cam_k8, near_plane):
    """z' (depth, 1 below the near plane), j00, j02, j11, j12 and the partials of j02 / j12 w.r.t. x / y and z'."""
    fx, fy = cam_k8[0], cam_k8[1]
    z = p[2] if p[2] >= near_plane else 1.0
    uc, du_dx, du_dz = _clamped(p[0], z, cam_k8[4], cam_k8[5])
    vc, dv_dy, dv_dz = _clamped(p[1], z, cam_k8[6], cam_k8[7])
    # j02 = -fx uc / z, j12 = -fy vc / z
    return (z, fx / z, -fx * uc / z, fy / z, -fy * vc / z,
            -fx / z * du_dx, fx * uc / (z * z) - fx / z * du_dz,
            -fy / z * dv_dy, fy * vc / (z * z) - fy / z * dv_dz)


@njit(cache=True, nogil=True)
def project_forward(means_n3, quats_n4, scales_n3, viewmats_c44, cams_c8, near_plane, means2d_cn2, cov2d_cn3,
                    depths_cn):
    """Fill means2d [C,N,2], cov2d [C,N,3] (entries 00, 01, 11, before eps2d) and depths [C,N] (camera z).
    cams_c8 per camera: fx, fy, cx, cy (gsplat pixel convention), then the x/z clamp limits (negative side,
    positive side) and the y/z ones."""
    n_cameras, n = depths_cn.shape
    q_hat, rot, m, sigma = np.empty(4), np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
    p, sigma_c, tmp = np.empty(3), np.empty((3, 3)), np.empty((3, 3))
    for g in range(n):
        _world_covariance(quats_n4[g], scales_n3[g], q_hat, rot, m, sigma)
        for c in range(n_cameras):
            _camera(viewmats_c44[c], means_n3[g], sigma, p, sigma_c, tmp)
            z, j00, j02, j11, j12, _, _, _, _ = _jacobian(p, cams_c8[c], near_plane)
            means2d_cn2[c, g, 0] = cams_c8[c, 0] * p[0] / z + cams_c8[c, 2]
            means2d_cn2[c, g, 1] = cams_c8[c, 1] * p[1] / z + cams_c8[c, 3]
            depths_cn[c, g] = p[2]
            t00 = j00 * sigma_c[0, 0] + j02 * sigma_c[0, 2]   # rows of J sigma_c
            t01 = j00 * sigma_c[0, 1] + j02 * sigma_c[1, 2]
            t02 = j00 * sigma_c[0, 2] + j02 * sigma_c[2, 2]
            t11 = j11 * sigma_c[1, 1] + j12 * sigma_c[1, 2]
            t12 = j11 * sigma_c[1, 2] + j12 * sigma_c[2, 2]
            cov2d_cn3[c, g, 0] = t00 * j00 + t02 * j02
            cov2d_cn3[c, g, 1] = t01 * j11 + t02 * j12
            cov2d_cn3[c, g, 2] = t11 * j11 + t12 * j12


@njit(cache=True, nogil=True)
def project_backward(g_start, g_end, means_n3, quats_n4, scales_n3, viewmats_c44, cams_c8, near_plane, v_means2d_cn2,
                     v_cov2d_cn3, v_depths_cn, v_means_n3, v_quats_n4, v_scales_n3, v_viewmats_c44):
    """Accumulate the gradients of sum(v_means2d * means2d) + sum(v_cov2d * cov2d) + sum(v_depths * depths) over
    Gaussians [g_start, g_end) into the (zero-initialised) v_means, v_quats, v_scales (their rows g) and
    v_viewmats (rows 0-2; a caller splitting the Gaussians gives each range its own, summed afterwards)."""
    n_cameras = v_depths_cn.shape[0]
    q_hat, rot, m, sigma = np.empty(4), np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
    p, sigma_c, tmp = np.empty(3), np.empty((3, 3)), np.empty((3, 3))
    jac, g2, v_jac = np.zeros((2, 3)), np.empty((2, 2)), np.empty((2, 3))
    v_sc, v_sigma, v_p, js = np.empty((3, 3)), np.empty((3, 3)), np.empty(3), np.empty((2, 3))
    v_m, v_rot, vr = np.empty((3, 3)), np.empty((3, 3)), np.empty((3, 3))
    for g in range(g_start, g_end):
        norm = _world_covariance(quats_n4[g], scales_n3[g], q_hat, rot, m, sigma)
        v_sigma[:, :] = 0.0
        for c in range(n_cameras):
            view, cam = viewmats_c44[c], cams_c8[c]
            _camera(view, means_n3[g], sigma, p, sigma_c, tmp)
            z, j00, j02, j11, j12, dj02_dx, dj02_dz, dj12_dy, dj12_dz = _jacobian(p, cam, near_plane)
            jac[0, 0], jac[0, 2], jac[1, 1], jac[1, 2] = j00, j02, j11, j12
            g2[0, 0], g2[1, 1] = v_cov2d_cn3[c, g, 0], v_cov2d_cn3[c, g, 2]
            g2[0, 1] = g2[1, 0] = 0.5 * v_cov2d_cn3[c, g, 1]
            # v_J = 2 G J sigma_c (only the four non-zero entries of J matter)
            for i in range(2):
                for k in range(3):
                    js[i, k] = jac[i, 0] * sigma_c[0, k] + jac[i, 1] * sigma_c[1, k] + jac[i, 2] * sigma_c[2, k]
            for i in range(2):
                for k in range(3):
                    v_jac[i, k] = 2.0 * (g2[i, 0] * js[0, k] + g2[i, 1] * js[1, k])
            # v_sigma_c = J^T G J
            for a in range(3):
                for b in range(3):
                    acc = 0.0
                    for i in range(2):
                        acc += jac[i, a] * (g2[i, 0] * jac[0, b] + g2[i, 1] * jac[1, b])
                    v_sc[a, b] = acc
            # camera-space mean: means2d, depth and the Jacobian's dependence on x, y, z'
            fx, fy = cam[0], cam[1]
            vmx, vmy = v_means2d_cn2[c, g, 0], v_means2d_cn2[c, g, 1]
            v_z = (-fx * p[0] * vmx - fy * p[1] * vmy) / (z * z) - fx / (z * z) * v_jac[0, 0] \
                - fy / (z * z) * v_jac[1, 1] + dj02_dz * v_jac[0, 2] + dj12_dz * v_jac[1, 2]
            v_p[0] = fx / z * vmx + dj02_dx * v_jac[0, 2]
            v_p[1] = fy / z * vmy + dj12_dy * v_jac[1, 2]
            v_p[2] = v_depths_cn[c, g] + (v_z if p[2] >= near_plane else 0.0)
            for i in range(3):
                for j in range(3):
                    vr[i, j] = v_sc[i, 0] * view[0, j] + v_sc[i, 1] * view[1, j] + v_sc[i, 2] * view[2, j]
            for i in range(3):
                # v_mean = R_c^T v_p
                v_means_n3[g, i] += view[0, i] * v_p[0] + view[1, i] * v_p[1] + view[2, i] * v_p[2]
                v_viewmats_c44[c, i, 3] += v_p[i]
                for j in range(3):
                    # v_R_c = 2 v_sigma_c (R_c sigma) + v_p mean^T (tmp = R_c sigma, from _camera);
                    # v_sigma += R_c^T (v_sigma_c R_c)
                    v_viewmats_c44[c, i, j] += 2.0 * (v_sc[i, 0] * tmp[0, j] + v_sc[i, 1] * tmp[1, j]
                                                      + v_sc[i, 2] * tmp[2, j]) + v_p[i] * means_n3[g, j]
                    v_sigma[i, j] += view[0, i] * vr[0, j] + view[1, i] * vr[1, j] + view[2, i] * vr[2, j]
        # sigma = m m^T, m = rot diag(s)
        for i in range(3):
            for k in range(3):
                v_m[i, k] = 2.0 * (v_sigma[i, 0] * m[0, k] + v_sigma[i, 1] * m[1, k] + v_sigma[i, 2] * m[2, k])
        for k in range(3):
            v_scales_n3[g, k] += v_m[0, k] * rot[0, k] + v_m[1, k] * rot[1, k] + v_m[2, k] * rot[2, k]
            for i in range(3):
                v_rot[i, k] = v_m[i, k] * scales_n3[g, k]
        _quat_backward(q_hat, norm, v_rot, v_quats_n4[g])


@njit(cache=True, nogil=True, inline="always")
def _quat_backward(q_hat, norm, v_rot, v_quat):
    """Through R(q_hat) and q_hat = q / max(|q|, eps)."""
    w, x, y, z = q_hat[0], q_hat[1], q_hat[2], q_hat[3]
    v = v_rot
    vw = 2.0 * (-z * v[0, 1] + y * v[0, 2] + z * v[1, 0] - x * v[1, 2] - y * v[2, 0] + x * v[2, 1])
    vx = 2.0 * (y * v[0, 1] + z * v[0, 2] + y * v[1, 0] - 2 * x * v[1, 1] - w * v[1, 2] + z * v[2, 0]
                + w * v[2, 1] - 2 * x * v[2, 2])
    vy = 2.0 * (-2 * y * v[0, 0] + x * v[0, 1] + w * v[0, 2] + x * v[1, 0] + z * v[1, 2] - w * v[2, 0]
                + z * v[2, 1] - 2 * y * v[2, 2])
    vz = 2.0 * (-2 * z * v[0, 0] - w * v[0, 1] + x * v[0, 2] + w * v[1, 0] - 2 * z * v[1, 1] + y * v[1, 2]
                + x * v[2, 0] + y * v[2, 1])
    if norm <= QUAT_EPS:  # F.normalize divides by the clamped eps: a constant, no projection
        v_quat[0] += vw / norm
        v_quat[1] += vx / norm
        v_quat[2] += vy / norm
        v_quat[3] += vz / norm
        return
    dot = w * vw + x * vx + y * vy + z * vz
    v_quat[0] += (vw - w * dot) / norm
    v_quat[1] += (vx - x * dot) / norm
    v_quat[2] += (vy - y * dot) / norm
    v_quat[3] += (vz - z * dot) / norm
