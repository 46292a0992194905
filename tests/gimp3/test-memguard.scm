; test-memguard.scm - the memory guard in a headless GIMP 3.0: run by tests/test-gimp3.sh in a
; session of its own, started with SDG_MEMORY_LIMIT below what the tiny model's 64x64 runs need
; (GIMP hands its environment to every plug-in it starts, so the limit cannot be set from inside
; the session that runs test-plugin.scm). Every procedure must fail and leave the image exactly as
; it was; the shell script checks GIMP's stderr for the sentence. Defined before loading this
; file: sdg-model, tap-path (and the helpers of tests/gimp-lib.scm). Every call that may fail is
; inside catch: GIMP 3 stops at a failing batch command.

(define (gradient-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img "background" w h RGB-IMAGE 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-context-set-foreground '(200 30 200))
    (gimp-context-set-background '(240 220 10))
    (gimp-drawable-edit-gradient-fill l GRADIENT-SPIRAL-CLOCKWISE 0 FALSE 1 0 TRUE
                                      (quotient w 2) (quotient h 2) (+ (quotient w 2) 9)
                                      (quotient h 3))
    (list img l)))

(define (layers img) (vector->list (car (gimp-image-get-layers img))))
(define (pixels d)
  (map (lambda (p) (car (gimp-drawable-get-pixel d (car p) (cadr p))))
       '((0 0) (10 20) (31 40) (63 63) (50 5) (20 60))))

; Runs thunk, which must fail, and checks that nothing of the image changed.
(define (refused label img d thunk)
  (let* ((before (layers img)) (snap (pixels d))
         (ran (catch #f (begin (thunk) #t))))
    (ok (not ran) (string-append label ": the procedure fails"))
    (ok (and (equal? (layers img) before) (equal? (pixels d) snap))
        (string-append label ": the image is unchanged"))))

(let* ((spec (gradient-image 64 64)) (img (car spec)) (l (cadr spec)))
  (refused "t2i over the memory limit" img l
    (lambda () (plug-in-diffusion-text-to-image
                 #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector l)
                 #:prompt "a red fox" #:model sdg-model #:sampler "euler_a" #:steps 2
                 #:cfg-scale 7.0 #:seed 5 #:batch-count 1 #:loras "")))
  (refused "i2i over the memory limit" img l
    (lambda () (plug-in-diffusion-image-to-image
                 #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector l)
                 #:prompt "a red fox" #:model sdg-model #:sampler "euler_a" #:steps 2
                 #:cfg-scale 7.0 #:seed 5 #:batch-count 2 #:strength 0.8 #:loras "")))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 16 16 24 24)
  (refused "inpaint over the memory limit" img l
    (lambda () (plug-in-diffusion-inpaint
                 #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector l)
                 #:prompt "a red fox" #:model sdg-model #:sampler "euler_a" #:steps 2
                 #:cfg-scale 7.0 #:seed 5 #:batch-count 1 #:strength 0.8 #:loras "")))
  (gimp-image-delete img))

(tap-finish)
