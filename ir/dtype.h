/* Element types shared by the IR and the runtime. The order is part of the
 * textual IR (names) and of no file format, so it may grow at the end. */
#ifndef QUADC_IR_DTYPE_H
#define QUADC_IR_DTYPE_H

#include <stddef.h>

typedef enum ir_dtype {
    IR_F32,
    IR_F16,
    IR_BF16,
    IR_I8,
    IR_U8,
    IR_I32,
    IR_I64,
    IR_DTYPE_COUNT
} ir_dtype;

/* Lower-case IR spelling: "f32", "f16", "bf16", "i8", "u8", "i32", "i64". */
const char *ir_dtype_name(ir_dtype t);
/* Returns IR_DTYPE_COUNT for an unknown name. */
ir_dtype ir_dtype_from_name(const char *name);
size_t ir_dtype_size(ir_dtype t);

#endif
