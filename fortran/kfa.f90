! Fortran binding of the kfa C API (include/kfa/c/kfa.h), through iso_c_binding only, so that any
! Fortran 2008 compiler with the TS 29113 optional-argument interop (gfortran, ifx, nvfortran, flang)
! can call kfa without a C shim. A Fortran array in its natural order, q(head_dim, heads, seqlen, batch),
! has exactly the memory layout of kfa's row-major q[batch, seqlen, heads, head_dim]: kfa_tensor_of
! describes such an array (extents reversed, strides from the elements' addresses), so nothing is copied.
module kfa
  use, intrinsic :: iso_c_binding
  implicit none
  private

  ! Status codes (kfa_status)
  integer(c_int32_t), parameter, public :: KFA_SUCCESS = 0, KFA_ERROR_INVALID_ARGUMENT = 1, &
    KFA_ERROR_UNSUPPORTED = 2, KFA_ERROR_LAUNCH = 3, KFA_ERROR_NOT_INITIALIZED = 4, KFA_ERROR_INTERNAL = 5
  ! Element types, memory spaces
  integer(c_int32_t), parameter, public :: KFA_DTYPE_F32 = 0, KFA_DTYPE_F64 = 1, KFA_DTYPE_F16 = 2, &
    KFA_DTYPE_BF16 = 3, KFA_DTYPE_I32 = 4
  integer(c_int32_t), parameter, public :: KFA_MEMORY_HOST = 0, KFA_MEMORY_DEVICE = 1
  integer, parameter, public :: KFA_MAX_RANK = 5

  !> struct kfa_tensor: extents/strides in C (row-major) order, strides in elements.
  type, bind(C), public :: kfa_tensor
    type(c_ptr) :: data = c_null_ptr
    integer(c_int64_t) :: extents(KFA_MAX_RANK) = 0
    integer(c_int64_t) :: strides(KFA_MAX_RANK) = 0
    integer(c_int32_t) :: dtype = 0
    integer(c_int32_t) :: rank = 0
    integer(c_int32_t) :: memory = KFA_MEMORY_HOST
    integer(c_int32_t) :: reserved = 0
  end type kfa_tensor

  !> struct kfa_params, default-initialized to kfa_params_default()'s values. seed and offset are
  !> uint64_t in C: Fortran has no unsigned integers, the same 64 bits are held as integer(c_int64_t).
  type, bind(C), public :: kfa_params
    real(c_double) :: softmax_scale = 0
    real(c_double) :: softcap = 0
    real(c_double) :: dropout_p = 0
    integer(c_int64_t) :: window_left = -1
    integer(c_int64_t) :: window_right = -1
    integer(c_int64_t) :: seed = 0
    integer(c_int64_t) :: offset = 0
    type(c_ptr) :: alibi_slopes = c_null_ptr  ! c_loc of a real(c_float), target array of `heads` slopes
    integer(c_int64_t) :: num_alibi_slopes = 0
    integer(c_int32_t) :: has_softmax_scale = 0
    integer(c_int32_t) :: causal = 0
    integer(c_int32_t) :: deterministic = 0
    integer(c_int32_t) :: backend = 0
    type(c_ptr) :: block_mask = c_null_ptr  ! a kfa_block_mask from the C API (kfa_block_mask_create)
  end type kfa_params

  public :: kfa_tensor_contiguous, kfa_params_default_c, kfa_initialize, kfa_finalize, kfa_context_create, &
    kfa_context_destroy, kfa_context_fence, kfa_last_error_c, kfa_forward, kfa_backward, kfa_forward_varlen, &
    kfa_backward_varlen, kfa_forward_kvcache, kfa_backward_workspace_size, kfa_backward_with_workspace
  public :: kfa_tensor_of, kfa_params_default, kfa_last_error

  ! The C functions. A kfa_context is an opaque pointer: type(c_ptr). Arguments the C API accepts as
  ! NULL are `optional` (absent = NULL): every `params` (absent = defaults), and kvcache's k_new, v_new
  ! and block_table. kfa_params_default and kfa_last_error are bound as *_c, since the Fortran
  ! kfa_params_default() and kfa_last_error() below return Fortran values.
  interface
    function kfa_tensor_contiguous(data, dtype, rank, extents, memory) result(t) &
        bind(C, name="kfa_tensor_contiguous")
      import :: c_ptr, c_int32_t, c_int64_t, kfa_tensor
      type(c_ptr), value :: data
      integer(c_int32_t), value :: dtype, rank, memory
      integer(c_int64_t), intent(in) :: extents(*)
      type(kfa_tensor) :: t
    end function kfa_tensor_contiguous

    subroutine kfa_params_default_c(params) bind(C, name="kfa_params_default")
      import :: kfa_params
      type(kfa_params), intent(out) :: params
    end subroutine kfa_params_default_c

    integer(c_int32_t) function kfa_initialize() bind(C, name="kfa_initialize")
      import :: c_int32_t
    end function kfa_initialize

    integer(c_int32_t) function kfa_finalize() bind(C, name="kfa_finalize")
      import :: c_int32_t
    end function kfa_finalize

    integer(c_int32_t) function kfa_context_create(ctx, memory, stream) bind(C, name="kfa_context_create")
      import :: c_int32_t, c_ptr
      type(c_ptr), intent(out) :: ctx
      integer(c_int32_t), value :: memory
      type(c_ptr), value :: stream  ! c_null_ptr: the default instance
    end function kfa_context_create

    integer(c_int32_t) function kfa_context_destroy(ctx) bind(C, name="kfa_context_destroy")
      import :: c_int32_t, c_ptr
      type(c_ptr), value :: ctx
    end function kfa_context_destroy

    integer(c_int32_t) function kfa_context_fence(ctx) bind(C, name="kfa_context_fence")
      import :: c_int32_t, c_ptr
      type(c_ptr), value :: ctx
    end function kfa_context_fence

    type(c_ptr) function kfa_last_error_c() bind(C, name="kfa_last_error")
      import :: c_ptr
    end function kfa_last_error_c

    integer(c_int32_t) function kfa_forward(ctx, q, k, v, o, lse, params) bind(C, name="kfa_forward")
      import :: c_int32_t, c_ptr, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: q, k, v, o, lse
      type(kfa_params), intent(in), optional :: params
    end function kfa_forward

    integer(c_int32_t) function kfa_backward(ctx, dout, q, k, v, out, lse, dq, dk, dv, params) &
        bind(C, name="kfa_backward")
      import :: c_int32_t, c_ptr, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: dout, q, k, v, out, lse, dq, dk, dv
      type(kfa_params), intent(in), optional :: params
    end function kfa_backward

    ! Bytes of the workspace kfa_backward_with_workspace needs for q, k and params (pass params, or
    ! name `bytes=`).
    integer(c_int32_t) function kfa_backward_workspace_size(ctx, q, k, params, bytes) &
        bind(C, name="kfa_backward_workspace_size")
      import :: c_int32_t, c_ptr, c_size_t, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: q, k
      type(kfa_params), intent(in), optional :: params
      integer(c_size_t), intent(out) :: bytes
    end function kfa_backward_workspace_size

    ! kfa_backward with a caller-owned workspace (c_loc of an 8-byte aligned array of at least
    ! kfa_backward_workspace_size bytes): it allocates nothing.
    integer(c_int32_t) function kfa_backward_with_workspace(ctx, dout, q, k, v, out, lse, dq, dk, dv, params, &
        workspace, workspace_bytes) bind(C, name="kfa_backward_with_workspace")
      import :: c_int32_t, c_ptr, c_size_t, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: dout, q, k, v, out, lse, dq, dk, dv
      type(kfa_params), intent(in), optional :: params
      type(c_ptr), value :: workspace
      integer(c_size_t), value :: workspace_bytes
    end function kfa_backward_with_workspace

    integer(c_int32_t) function kfa_forward_varlen(ctx, q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k, &
        max_seqlen_q, max_seqlen_k, params) bind(C, name="kfa_forward_varlen")
      import :: c_int32_t, c_int64_t, c_ptr, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: q, k, v, o, lse, cu_seqlens_q, cu_seqlens_k
      integer(c_int64_t), value :: max_seqlen_q, max_seqlen_k
      type(kfa_params), intent(in), optional :: params
    end function kfa_forward_varlen

    integer(c_int32_t) function kfa_backward_varlen(ctx, dout, q, k, v, out, lse, dq, dk, dv, cu_seqlens_q, &
        cu_seqlens_k, max_seqlen_q, max_seqlen_k, params) bind(C, name="kfa_backward_varlen")
      import :: c_int32_t, c_int64_t, c_ptr, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: dout, q, k, v, out, lse, dq, dk, dv, cu_seqlens_q, cu_seqlens_k
      integer(c_int64_t), value :: max_seqlen_q, max_seqlen_k
      type(kfa_params), intent(in), optional :: params
    end function kfa_backward_varlen

    integer(c_int32_t) function kfa_forward_kvcache(ctx, q, k_cache, v_cache, o, lse, cache_seqlens, k_new, &
        v_new, block_table, num_splits, check_indices, params) bind(C, name="kfa_forward_kvcache")
      import :: c_int32_t, c_ptr, kfa_tensor, kfa_params
      type(c_ptr), value :: ctx
      type(kfa_tensor), intent(in) :: q, k_cache, v_cache, o, lse, cache_seqlens
      type(kfa_tensor), intent(in), optional :: k_new, v_new, block_table
      integer(c_int32_t), value :: num_splits, check_indices
      type(kfa_params), intent(in), optional :: params
    end function kfa_forward_kvcache

    pure integer(c_size_t) function c_strlen(s) bind(C, name="strlen")
      import :: c_size_t, c_ptr
      type(c_ptr), value :: s
    end function c_strlen
  end interface

  !> kfa_tensor_of(x [, memory]): the descriptor of array x (which must have the TARGET attribute, or be
  !> a pointer array, and outlive every call that uses the descriptor). x may be any section whose
  !> first dimension has unit stride; the extents are x's reversed, the strides come from the
  !> addresses of x's elements, so a section is described in place (never through a temporary).
  !> memory: KFA_MEMORY_HOST (default), or KFA_MEMORY_DEVICE for device arrays (CUDA Fortran device
  !> arrays, or OpenACC/OpenMP device addresses of host arrays).
  interface kfa_tensor_of
    module procedure tensor_f32_2, tensor_f32_3, tensor_f32_4, tensor_f64_2, tensor_f64_3, tensor_f64_4, &
      tensor_i32_1, tensor_i32_2
  end interface kfa_tensor_of

contains

  !> kfa_params_default(): plain softmax(Q K^T / sqrt(head_dim)) V.
  function kfa_params_default() result(p)
    type(kfa_params) :: p
    call kfa_params_default_c(p)
  end function kfa_params_default

  !> The message of the calling thread's last failed call ("" when none).
  function kfa_last_error() result(msg)
    character(:), allocatable :: msg
    type(c_ptr) :: s
    character(kind=c_char), pointer :: chars(:)
    integer :: i, n
    s = kfa_last_error_c()
    n = 0
    if (c_associated(s)) n = int(c_strlen(s))
    allocate (character(n) :: msg)
    if (n == 0) return
    call c_f_pointer(s, chars, [n])
    do i = 1, n
      msg(i:i) = chars(i)
    end do
  end function kfa_last_error

  ! The descriptor of an array of Fortran shape `shp` whose first element is at `first` (absent: an
  ! empty array); steps(r) is the address of the next element along Fortran dimension r (the first
  ! element again where shp(r) == 1, then any stride describes the dimension: the natural one is used).
  function describe(shp, elem_bytes, dtype, memory, first, steps) result(t)
    integer(c_int64_t), intent(in) :: shp(:)
    integer(c_size_t), intent(in) :: elem_bytes
    integer(c_int32_t), intent(in) :: dtype
    integer(c_int32_t), intent(in), optional :: memory
    type(c_ptr), intent(in), optional :: first, steps(:)
    type(kfa_tensor) :: t
    integer :: r, n
    integer(c_int64_t) :: natural
    n = size(shp)
    t%dtype = dtype
    t%rank = n
    if (present(memory)) t%memory = memory
    if (present(first)) t%data = first
    natural = 1
    do r = 1, n
      t%extents(n - r + 1) = shp(r)
      t%strides(n - r + 1) = natural
      if (present(first) .and. shp(r) > 1) t%strides(n - r + 1) = &
        (address(steps(r)) - address(first)) / int(elem_bytes, c_intptr_t)
      natural = natural * max(shp(r), 1_c_int64_t)
    end do
  end function describe

  pure integer(c_intptr_t) function address(p)
    type(c_ptr), intent(in) :: p
    address = transfer(p, 0_c_intptr_t)
  end function address

  function tensor_f32_2(x, memory) result(t)
    real(c_float), intent(in), target :: x(:, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(2)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory, c_loc(x(1, 1)), &
      [c_loc(x(s(1), 1)), c_loc(x(1, s(2)))])
  end function tensor_f32_2

  function tensor_f32_3(x, memory) result(t)
    real(c_float), intent(in), target :: x(:, :, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(3)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory, c_loc(x(1, 1, 1)), &
      [c_loc(x(s(1), 1, 1)), c_loc(x(1, s(2), 1)), c_loc(x(1, 1, s(3)))])
  end function tensor_f32_3

  function tensor_f32_4(x, memory) result(t)
    real(c_float), intent(in), target :: x(:, :, :, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(4)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_float), KFA_DTYPE_F32, memory, c_loc(x(1, 1, 1, 1)), &
      [c_loc(x(s(1), 1, 1, 1)), c_loc(x(1, s(2), 1, 1)), &
      c_loc(x(1, 1, s(3), 1)), c_loc(x(1, 1, 1, s(4)))])
  end function tensor_f32_4

  function tensor_f64_2(x, memory) result(t)
    real(c_double), intent(in), target :: x(:, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(2)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory, c_loc(x(1, 1)), &
      [c_loc(x(s(1), 1)), c_loc(x(1, s(2)))])
  end function tensor_f64_2

  function tensor_f64_3(x, memory) result(t)
    real(c_double), intent(in), target :: x(:, :, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(3)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory, c_loc(x(1, 1, 1)), &
      [c_loc(x(s(1), 1, 1)), c_loc(x(1, s(2), 1)), c_loc(x(1, 1, s(3)))])
  end function tensor_f64_3

  function tensor_f64_4(x, memory) result(t)
    real(c_double), intent(in), target :: x(:, :, :, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(4)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0.0_c_double), KFA_DTYPE_F64, memory, c_loc(x(1, 1, 1, 1)), &
      [c_loc(x(s(1), 1, 1, 1)), c_loc(x(1, s(2), 1, 1)), &
      c_loc(x(1, 1, s(3), 1)), c_loc(x(1, 1, 1, s(4)))])
  end function tensor_f64_4

  function tensor_i32_1(x, memory) result(t)
    integer(c_int32_t), intent(in), target :: x(:)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(1)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0_c_int32_t), KFA_DTYPE_I32, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0_c_int32_t), KFA_DTYPE_I32, memory, c_loc(x(1)), &
      [c_loc(x(s(1)))])
  end function tensor_i32_1

  function tensor_i32_2(x, memory) result(t)
    integer(c_int32_t), intent(in), target :: x(:, :)
    integer(c_int32_t), intent(in), optional :: memory
    type(kfa_tensor) :: t
    integer :: s(2)
    if (size(x, kind=c_int64_t) == 0) then
      t = describe(shape(x, c_int64_t), c_sizeof(0_c_int32_t), KFA_DTYPE_I32, memory)
      return
    end if
    s = int(min(shape(x, c_int64_t), 2_c_int64_t))  ! the second element along each dimension
    t = describe(shape(x, c_int64_t), c_sizeof(0_c_int32_t), KFA_DTYPE_I32, memory, c_loc(x(1, 1)), &
      [c_loc(x(s(1), 1)), c_loc(x(1, s(2)))])
  end function tensor_i32_2
end module kfa
