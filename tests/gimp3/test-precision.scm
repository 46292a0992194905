; test-precision.scm - the precision setting in a headless GIMP 3.0: run by tests/test-gimp3.sh in
; a session of its own, started with SDG_KERNELS=c-bf16 (GIMP hands its environment to every
; plug-in it starts), so the kernel sets are the portable ones on any CPU: exact runs "c", fast
; "c-bf16", whose bfloat16 products are those of AVX512-BF16. Defined before loading this file:
; sdg-model, tap-path (and the helpers of tests/gimp-lib.scm).
;
; Precision is not a procedure argument but an auxiliary one: the dialog's setting, remembered
; with the last values. Before the session the shell script writes those last values as the
; dialog leaves them (the profile's plug-in-settings/GimpProcedureConfigRun-PROC.last): text to
; image "a red fox", euler, 2 steps, CFG 7, seed 1 with precision "exact"; image to image with
; "fast"; inpaint with "bogus". Checked: RUN-WITH-LAST-VALS (Filters > Repeat) hands the
; remembered precision to the engine and the layer parasite (precision, kernels); a procedure call
; runs and records "default" (the engine's choice, fast: kernels c-bf16) whatever is remembered,
; and its values become the last ones; exact pictures differ from default (fast) ones; an unknown
; name is refused and adds nothing.
; Every call that may fail is inside catch: GIMP 3 stops at a failing batch command.
; Not here: the dialog's control (tests/test-dialog.sh).

(define (white-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img "background" w h RGB-IMAGE 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-drawable-fill l FILL-WHITE)
    (list img l)))

(define (layers img) (vector->list (car (gimp-image-get-layers img))))
; A run's layer goes directly above the source l, so the newest one is there.
(define (newest img l) (list-ref (layers img) (- (car (gimp-image-get-item-position img l)) 1)))
(define (parasite-of l)
  (catch "" (caddr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))

; Every pixel of an 8 x 8 grid over layer l (48 x 48).
(define (pixels l)
  (let loop ((i 0) (acc '()))
    (if (= i 64) acc
        (loop (+ i 1)
              (cons (car (gimp-drawable-get-pixel l (* 6 (remainder i 8)) (* 6 (quotient i 8))))
                    acc)))))

; The values the shell script remembered for text to image, with every argument given.
(define (call img l)
  (catch #f
    (begin
      (plug-in-diffusion-text-to-image
        #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector l)
        #:prompt "a red fox" #:negative-prompt "" #:model sdg-model #:sampler "euler"
        #:steps 2 #:cfg-scale 7.0 #:seed 1 #:batch-count 1 #:loras "")
      #t)))
(define (repeat proc img l)
  (catch #f (begin (proc #:run-mode RUN-WITH-LAST-VALS #:image img #:drawables (vector l)) #t)))

; The parasite holds precision=p and kernels=k (each a whole line).
(define (records? l p k)
  (let ((text (parasite-of l)))
    (and (string-contains text (string-append "\nprecision=" p "\n"))
         (string-contains text (string-append "\nkernels=" k "\n")))))

(let* ((spec (white-image 48 48)) (img (car spec)) (l (cadr spec)))
  (ok (and (repeat plug-in-diffusion-text-to-image img l) (records? (newest img l) "exact" "c"))
      "Repeat with Exact remembered: precision=exact, kernels=c")
  (let ((exact (newest img l)))
    (ok (and (call img l) (records? (newest img l) "default" "c-bf16"))
        "a call runs precision=default (fast: c-bf16) although Exact is remembered")
    (let ((called (newest img l)))
      (ok (not (equal? (pixels exact) (pixels called)))
          "the exact picture differs from the default (fast) one: the engine got the setting")
      (ok (and (repeat plug-in-diffusion-text-to-image img l)
               (records? (newest img l) "default" "c-bf16")
               (equal? (pixels (newest img l)) (pixels called)))
          "Repeat after the call repeats it, precision=default included")))

  (ok (and (repeat plug-in-diffusion-image-to-image img l) (records? (newest img l) "fast" "c-bf16"))
      "image to image with Fast remembered: precision=fast, kernels=c-bf16")

  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 16 16)
  (let ((before (layers img)))
    (ok (not (repeat plug-in-diffusion-inpaint img l)) "an unknown remembered precision is refused")
    (ok (equal? (layers img) before) "and adds no layer"))
  (gimp-image-delete img))

(tap-finish)
