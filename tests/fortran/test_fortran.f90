! The Fortran module (fortran/kfa.f90) end to end on the host: kfa's forward and backward in fp32 and
! fp64, GQA, causal and not, from Fortran arrays in their natural order, against a naive Fortran
! reference; packed sequences; the descriptors kfa_tensor_of builds (also of an array section); the
! default parameters; and a call with bad extents, which must fail with a message and write nothing.
! Fresh random inputs every run; outputs are NaN before each call. Exits non-zero on any failure.
module tally
  implicit none
  integer :: checks = 0, failures = 0
contains
  subroutine expect(ok, what)
    logical, intent(in) :: ok
    character(*), intent(in) :: what
    checks = checks + 1
    if (.not. ok) then
      failures = failures + 1
      print '(a, a)', 'FAILED: ', what
    end if
  end subroutine expect
end module tally

module ref_f32
  use, intrinsic :: iso_c_binding, only: wp => c_float
  implicit none
contains
  include 'reference.inc'
end module ref_f32

module ref_f64
  use, intrinsic :: iso_c_binding, only: wp => c_double
  implicit none
contains
  include 'reference.inc'
end module ref_f64

module reference
  use ref_f32, only: forward_f32 => reference_forward, backward_f32 => reference_backward
  use ref_f64, only: forward_f64 => reference_forward, backward_f64 => reference_backward
  implicit none
  interface reference_forward
    module procedure forward_f32, forward_f64
  end interface
  interface reference_backward
    module procedure backward_f32, backward_f64
  end interface
end module reference

module check_f32
  use, intrinsic :: iso_c_binding
  use, intrinsic :: ieee_arithmetic
  use kfa
  use reference
  use tally
  implicit none
  integer, parameter :: wp = c_float
contains
  include 'check.inc'
end module check_f32

module check_f64
  use, intrinsic :: iso_c_binding
  use, intrinsic :: ieee_arithmetic
  use kfa
  use reference
  use tally
  implicit none
  integer, parameter :: wp = c_double
contains
  include 'check.inc'
end module check_f64

program test_fortran
  use, intrinsic :: iso_c_binding
  use, intrinsic :: ieee_arithmetic
  use kfa
  use tally
  use check_f32, only: check_case_f32 => check_case
  use check_f64, only: check_case_f64 => check_case
  implicit none
  type(c_ptr) :: ctx
  integer :: c

  call random_seed()
  call expect(kfa_initialize() == KFA_SUCCESS, 'kfa_initialize: ' // kfa_last_error())
  call expect(kfa_context_create(ctx, KFA_MEMORY_HOST, c_null_ptr) == KFA_SUCCESS, 'kfa_context_create')
  do c = 0, 1
    call check_case_f32(ctx, c == 1)
    call check_case_f64(ctx, c == 1)
  end do
  call check_descriptors()
  call check_section(ctx)
  call check_varlen(ctx)
  call check_bad_extents(ctx)
  call expect(kfa_context_destroy(ctx) == KFA_SUCCESS, 'kfa_context_destroy')
  call expect(kfa_finalize() == KFA_SUCCESS, 'kfa_finalize')
  print '(a, i0, a, i0, a)', 'test_fortran: ', checks - failures, ' of ', checks, ' checks passed'
  if (failures > 0) error stop 1

contains

  ! kfa_tensor_of of a contiguous array is kfa_tensor_contiguous of its reversed shape; the default
  ! initialization of kfa_params is kfa_params_default().
  subroutine check_descriptors()
    real(c_double), allocatable, target :: x(:, :, :, :)
    type(kfa_tensor) :: t, u
    type(kfa_params) :: p, def
    allocate (x(8, 4, 5, 3))
    t = kfa_tensor_of(x)
    u = kfa_tensor_contiguous(c_loc(x), KFA_DTYPE_F64, 4_c_int32_t, [3_c_int64_t, 5_c_int64_t, 4_c_int64_t, &
                              8_c_int64_t], KFA_MEMORY_HOST)
    call expect(c_associated(t%data, u%data) .and. all(t%extents == u%extents) .and. all(t%strides == &
                u%strides) .and. t%dtype == u%dtype .and. t%rank == u%rank .and. t%memory == u%memory .and. &
                all(t%strides(1:4) == [160, 32, 8, 1]), 'kfa_tensor_of(x) /= kfa_tensor_contiguous')
    def = kfa_params_default()
    call expect(p%softmax_scale == def%softmax_scale .and. p%softcap == def%softcap .and. p%dropout_p == &
                def%dropout_p .and. p%window_left == def%window_left .and. p%window_right == def%window_right &
                .and. p%seed == def%seed .and. p%offset == def%offset .and. .not. c_associated(def%alibi_slopes) &
                .and. p%num_alibi_slopes == def%num_alibi_slopes .and. p%has_softmax_scale == &
                def%has_softmax_scale .and. p%causal == def%causal .and. p%deterministic == def%deterministic &
                .and. p%backend == def%backend, 'type(kfa_params) defaults /= kfa_params_default()')
  end subroutine check_descriptors

  ! q as a section (rows 3..sq+2 of a longer sequence) gives the same forward as its contiguous copy;
  ! params absent = the defaults.
  subroutine check_section(ctx)
    type(c_ptr), intent(in) :: ctx
    integer, parameter :: d = 16, h = 4, hk = 2, sq = 21, sk = 30, nb = 2
    real(c_double), allocatable, target :: qbig(:, :, :, :), q(:, :, :, :), k(:, :, :, :), v(:, :, :, :), &
      o(:, :, :, :), o2(:, :, :, :), lse(:, :, :)
    allocate (qbig(d, h, sq + 5, nb), k(d, hk, sk, nb), v(d, hk, sk, nb), o(d, h, sq, nb), o2(d, h, sq, nb), &
              lse(sq, h, nb))
    call random_number(qbig)
    call random_number(k)
    call random_number(v)
    q = qbig(:, :, 3:sq + 2, :)
    call expect(kfa_forward(ctx, kfa_tensor_of(q), kfa_tensor_of(k), kfa_tensor_of(v), kfa_tensor_of(o), &
                            kfa_tensor_of(lse)) == KFA_SUCCESS, 'forward (contiguous q): ' // kfa_last_error())
    call expect(kfa_forward(ctx, kfa_tensor_of(qbig(:, :, 3:sq + 2, :)), kfa_tensor_of(k), kfa_tensor_of(v), &
                            kfa_tensor_of(o2), kfa_tensor_of(lse)) == KFA_SUCCESS, &
                'forward (q a section): ' // kfa_last_error())
    call expect(kfa_context_fence(ctx) == KFA_SUCCESS, 'fence')
    call expect(maxval(abs(o - o2)) <= 1d-12, 'forward of a section of q /= forward of its copy')
  end subroutine check_section

  ! Two packed sequences (kfa_forward_varlen: rank-3 q, k, v, o, rank-2 lse, int32 cu_seqlens), causal,
  ! each against the reference of that sequence alone.
  subroutine check_varlen(ctx)
    use ref_f64, only: reference_forward
    type(c_ptr), intent(in) :: ctx
    integer, parameter :: d = 16, h = 4, hk = 2
    integer(c_int32_t), target :: cu_q(3) = [0, 5, 13], cu_k(3) = [0, 7, 16]
    real(c_double), allocatable, target :: q(:, :, :), k(:, :, :), v(:, :, :), o(:, :, :), lse(:, :)
    real(c_double), allocatable :: o_t(:, :, :, :), lse_t(:, :, :)
    type(kfa_params) :: params
    real(c_double) :: err
    integer :: s, nq, nk
    allocate (q(d, h, cu_q(3)), k(d, hk, cu_k(3)), v(d, hk, cu_k(3)), o(d, h, cu_q(3)), lse(cu_q(3), h))
    call random_number(q)
    call random_number(k)
    call random_number(v)
    o = ieee_value(0d0, ieee_quiet_nan)
    params = kfa_params_default()
    params%causal = 1
    call expect(kfa_forward_varlen(ctx, kfa_tensor_of(q), kfa_tensor_of(k), kfa_tensor_of(v), kfa_tensor_of(o), &
                                   kfa_tensor_of(lse), kfa_tensor_of(cu_q), kfa_tensor_of(cu_k), 8_c_int64_t, &
                                   9_c_int64_t, params) == KFA_SUCCESS, 'forward_varlen: ' // kfa_last_error())
    call expect(kfa_context_fence(ctx) == KFA_SUCCESS, 'fence')
    err = 0
    do s = 1, 2
      nq = cu_q(s + 1) - cu_q(s)
      nk = cu_k(s + 1) - cu_k(s)
      allocate (o_t(d, h, nq, 1), lse_t(nq, h, 1))
      call reference_forward(reshape(q(:, :, cu_q(s) + 1:cu_q(s + 1)), [d, h, nq, 1]), &
                             reshape(k(:, :, cu_k(s) + 1:cu_k(s + 1)), [d, hk, nk, 1]), &
                             reshape(v(:, :, cu_k(s) + 1:cu_k(s + 1)), [d, hk, nk, 1]), .true., o_t, lse_t)
      err = max(err, maxval(abs(o(:, :, cu_q(s) + 1:cu_q(s + 1)) - o_t(:, :, :, 1))), &
                maxval(abs(lse(cu_q(s) + 1:cu_q(s + 1), :) - lse_t(:, :, 1))))
      deallocate (o_t, lse_t)
    end do
    print '(2x, a, es9.2)', 'fp64 varlen causal o, lse: kfa error ', err
    call expect(.not. any(ieee_is_nan(o)) .and. err <= 1d-10, 'forward_varlen differs from the reference')
  end subroutine check_varlen

  ! o one row too long: KFA_ERROR_INVALID_ARGUMENT, a message, and o not written.
  subroutine check_bad_extents(ctx)
    type(c_ptr), intent(in) :: ctx
    integer, parameter :: d = 16, h = 4, hk = 2, sq = 9, sk = 12, nb = 1
    real(c_double), allocatable, target :: q(:, :, :, :), k(:, :, :, :), v(:, :, :, :), o(:, :, :, :), &
      lse(:, :, :)
    integer(c_int32_t) :: status
    character(:), allocatable :: msg
    allocate (q(d, h, sq, nb), k(d, hk, sk, nb), v(d, hk, sk, nb), o(d, h, sq + 1, nb), lse(sq, h, nb))
    call random_number(q)
    call random_number(k)
    call random_number(v)
    o = ieee_value(0d0, ieee_quiet_nan)
    status = kfa_forward(ctx, kfa_tensor_of(q), kfa_tensor_of(k), kfa_tensor_of(v), kfa_tensor_of(o), &
                         kfa_tensor_of(lse), kfa_params_default())
    msg = kfa_last_error()
    print '(2x, a, i0, a, a)', 'bad extents: status ', status, ', message: ', msg
    call expect(status == KFA_ERROR_INVALID_ARGUMENT, 'bad extents: status is not KFA_ERROR_INVALID_ARGUMENT')
    call expect(len(msg) > 0, 'bad extents: empty message')
    call expect(all(ieee_is_nan(o)), 'bad extents: o was written')
  end subroutine check_bad_extents
end program test_fortran
