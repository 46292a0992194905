; test-precision.scm - the precision setting in a headless GIMP 2.10: run by tests/test-gimp.sh in
; a session of its own, started with SDG_KERNELS=c-bf16 (GIMP hands its environment to every
; plug-in it starts), so the kernel sets are the portable ones on any CPU: exact runs "c", fast
; "c-bf16", whose bfloat16 products are those of AVX512-BF16. Defined before loading this file:
; sdg-model, tap-path (and the helpers of tests/gimp-lib.scm).
;
; Precision is not a procedure argument: it is the dialog's setting, remembered with the last
; values (gimp_set_data: the plug-in's sdgp_params as bytes). This script sets it the way the
; dialog leaves it, by writing the field into those bytes (plugin/params.h: a 16-byte string at
; byte 6176, checked at build time), then runs RUN-WITH-LAST-VALS (Filters > Repeat). Checked:
; a procedure call runs and records "default" whatever is remembered; the remembered precision
; reaches the engine (exact pictures differ from fast ones, default ones are fast's bit for bit:
; the engine's default is fast)
; and the layer parasite (precision, kernels); an unknown name is refused and adds nothing.
; Not here: the dialog's control (tests/test-dialog.sh).

(define proc "plug-in-diffusion-text-to-image")
(define precision-offset 6176)
(define precision-size 16)

(define (white-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img w h RGB-IMAGE "background" 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-drawable-fill l FILL-WHITE)
    (list img l)))

(define (layers img) (vector->list (cadr (gimp-image-get-layers img))))
; A run's layer goes directly above the source l, so the newest one is there.
(define (newest img l) (list-ref (layers img) (- (car (gimp-image-get-item-position img l)) 1)))
(define (parasite-of l)
  (catch "" (caddr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))

; Every pixel of an 8 x 8 grid over layer l (48 x 48).
(define (pixels l)
  (let loop ((i 0) (acc '()))
    (if (= i 64) acc
        (loop (+ i 1)
              (cons (vector->list (cadr (gimp-drawable-get-pixel l (* 6 (remainder i 8))
                                                                 (* 6 (quotient i 8)))))
                    acc)))))

; A call with every argument given; #t on success.
(define (call img l seed)
  (catch #f (begin (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l "a red fox" "" sdg-model
                                                    "euler" 2 7.0 seed 1 "")
                   #t)))
(define (repeat img l)
  (catch #f (begin (plug-in-diffusion-text-to-image RUN-WITH-LAST-VALS img l "" "" "" "" 0 0 0 0 "")
                   #t)))

; The remembered precision, as the plug-in stored it.
(define (remembered-precision)
  (let ((data (cadr (gimp-procedural-db-get-data proc))))
    (let loop ((i 0) (acc '()))
      (if (or (= i precision-size) (= (vector-ref data (+ precision-offset i)) 0))
          (list->string (reverse acc))
          (loop (+ i 1) (cons (integer->char (vector-ref data (+ precision-offset i))) acc))))))

; What choosing `name` in the dialog leaves in the remembered values.
(define (remember-precision name)
  (let* ((got (gimp-procedural-db-get-data proc)) (n (car got)) (data (cadr got)))
    (let loop ((i 0))
      (if (< i precision-size)
          (begin
            (vector-set! data (+ precision-offset i)
                         (if (< i (string-length name)) (char->integer (string-ref name i)) 0))
            (loop (+ i 1)))))
    (gimp-procedural-db-set-data proc n data)))

; The parasite holds precision=p and kernels=k (each a whole line).
(define (records? l p k)
  (let ((text (parasite-of l)))
    (and (string-contains text (string-append "\nprecision=" p "\n"))
         (string-contains text (string-append "\nkernels=" k "\n")))))

(let* ((spec (white-image 48 48)) (img (car spec)) (l (cadr spec)))
  (ok (call img l 1) "a procedure call succeeds")
  (let ((called (newest img l)))
    (ok (records? called "default" "c-bf16") "a call records precision=default, kernels=c-bf16")
    (ok (string=? (remembered-precision) "default")
        "the remembered values hold the precision at the byte offset plugin/params.h says")

    (remember-precision "exact")
    (ok (and (repeat img l) (records? (newest img l) "exact" "c")) "Repeat with Exact: precision=exact, kernels=c")
    (let ((exact (newest img l)))
      (ok (not (equal? (pixels exact) (pixels called)))
          "the exact picture differs from the default (fast) one: the engine got the setting"))

    (remember-precision "fast")
    (ok (and (repeat img l) (records? (newest img l) "fast" "c-bf16"))
        "Repeat with Fast remembered: precision=fast, kernels=c-bf16")
    (ok (equal? (pixels (newest img l)) (pixels called))
        "the fast picture is the default one, bit for bit")

    (remember-precision "exact")
    (ok (and (call img l 1) (records? (newest img l) "default" "c-bf16"))
        "a call runs precision=default although Exact is remembered")
    (ok (string=? (remembered-precision) "default") "and its values, default included, are the last values")

    (remember-precision "bogus")
    (let ((before (layers img)))
      (ok (not (repeat img l)) "an unknown remembered precision is refused")
      (ok (equal? (layers img) before) "and adds no layer")))
  (gimp-image-delete img))

(tap-finish)
