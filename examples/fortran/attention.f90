! Smallest useful Fortran program with kfa: causal GQA attention of double-precision arrays in their
! natural Fortran order, forward and backward on the host, checked against a naive Fortran loop.
program attention
  use, intrinsic :: iso_c_binding
  use kfa
  implicit none
  integer, parameter :: d = 64, heads = 8, heads_kv = 2, seqlen = 128, batch = 2
  ! q, o, dout, dq(head_dim, heads, seqlen, batch); k, v, dk, dv(head_dim, heads_kv, seqlen, batch);
  ! lse(seqlen, heads, batch): the memory layout of kfa's row-major [batch, seqlen, heads, head_dim].
  real(c_double), allocatable, target :: q(:, :, :, :), k(:, :, :, :), v(:, :, :, :), o(:, :, :, :), &
    lse(:, :, :), dout(:, :, :, :), dq(:, :, :, :), dk(:, :, :, :), dv(:, :, :, :)
  real(c_double) :: s(seqlen), o_ref(d), err
  type(kfa_params) :: params
  type(c_ptr) :: ctx
  integer :: b, h, i, kv

  allocate (q(d, heads, seqlen, batch), k(d, heads_kv, seqlen, batch))
  allocate (o, dout, dq, mold=q)
  allocate (v, dk, dv, mold=k)
  allocate (lse(seqlen, heads, batch))
  call random_number(q)
  call random_number(k)
  call random_number(v)
  call random_number(dout)

  call check(kfa_initialize())
  call check(kfa_context_create(ctx, KFA_MEMORY_HOST, c_null_ptr))
  params = kfa_params_default()
  params%causal = 1
  call check(kfa_forward(ctx, kfa_tensor_of(q), kfa_tensor_of(k), kfa_tensor_of(v), kfa_tensor_of(o), &
                         kfa_tensor_of(lse), params))
  call check(kfa_backward(ctx, kfa_tensor_of(dout), kfa_tensor_of(q), kfa_tensor_of(k), kfa_tensor_of(v), &
                          kfa_tensor_of(o), kfa_tensor_of(lse), kfa_tensor_of(dq), kfa_tensor_of(dk), &
                          kfa_tensor_of(dv), params))
  call check(kfa_context_fence(ctx))

  ! naive causal softmax(q k^T / sqrt(d)) v, row by row
  err = 0
  do b = 1, batch
    do h = 1, heads
      kv = (h - 1) / (heads / heads_kv) + 1
      do i = 1, seqlen
        s(1:i) = matmul(q(:, h, i, b), k(:, kv, 1:i, b)) / sqrt(real(d, c_double))
        s(1:i) = exp(s(1:i) - maxval(s(1:i)))
        o_ref = matmul(v(:, kv, 1:i, b), s(1:i)) / sum(s(1:i))
        err = max(err, maxval(abs(o(:, h, i, b) - o_ref)))
      end do
    end do
  end do
  print '(a, 4(i0, a))', 'kfa Fortran example: causal GQA attention ', batch, 'x', seqlen, 'x', heads, 'x', d, &
    ' (double)'
  print '(a, es10.3, a, es10.3)', '  max |o| = ', maxval(abs(o)), ', max |o - naive| = ', err
  print '(a, 3es10.3)', '  max |dq|, |dk|, |dv| = ', maxval(abs(dq)), maxval(abs(dk)), maxval(abs(dv))

  call check(kfa_context_destroy(ctx))
  call check(kfa_finalize())
  deallocate (q, k, v, o, lse, dout, dq, dk, dv)
  if (err > 1d-12) error stop 'kfa Fortran example: o differs from the naive attention'

contains

  subroutine check(status)
    integer(c_int32_t), intent(in) :: status
    if (status /= KFA_SUCCESS) then
      print '(a, i0, a, a)', 'kfa failed (status ', status, '): ', kfa_last_error()
      error stop 1
    end if
  end subroutine check
end program attention
