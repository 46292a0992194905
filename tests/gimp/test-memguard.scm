; test-memguard.scm - the memory guard in a headless GIMP 2.10: run by tests/test-gimp.sh in a
; session of its own, started with SDG_MEMORY_LIMIT below what the tiny model's 64x64 runs need
; (GIMP hands its environment to every plug-in it starts, so the limit cannot be set from inside
; the session that runs test-plugin.scm). Every procedure must fail and leave the image exactly as
; it was; the shell script checks GIMP's stderr for the sentence. Defined before loading this
; file: sdg-model, tap-path (and the helpers of tests/gimp-lib.scm).

(define (plasma-image w h)
  (let* ((img (car (gimp-image-new w h RGB)))
         (l (car (gimp-layer-new img w h RGB-IMAGE "background" 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (plug-in-plasma RUN-NONINTERACTIVE img l 7 2.5)
    (list img l)))

(define (layers img) (vector->list (cadr (gimp-image-get-layers img))))
(define (pixels d)
  (map (lambda (p) (vector->list (cadr (gimp-drawable-get-pixel d (car p) (cadr p)))))
       '((0 0) (10 20) (31 40) (63 63) (50 5) (20 60))))

; Runs thunk, which must fail, and checks that nothing of the image changed.
(define (refused label img d thunk)
  (let* ((before (layers img)) (snap (pixels d))
         (ran (catch #f (begin (thunk) #t))))
    (ok (not ran) (string-append label ": the procedure fails"))
    (ok (and (equal? (layers img) before) (equal? (pixels d) snap))
        (string-append label ": the image is unchanged"))))

(let* ((spec (plasma-image 64 64)) (img (car spec)) (l (cadr spec)))
  (refused "t2i over the memory limit" img l
    (lambda () (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l "a red fox" "" sdg-model
                                                "euler_a" 2 7.0 5 1 "")))
  (refused "i2i over the memory limit" img l
    (lambda () (plug-in-diffusion-image-to-image RUN-NONINTERACTIVE img l "a red fox" "" sdg-model
                                                 "euler_a" 2 7.0 5 2 0.8 "")))
  (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 16 16 24 24)
  (refused "inpaint over the memory limit" img l
    (lambda () (plug-in-diffusion-inpaint RUN-NONINTERACTIVE img l "a red fox" "" sdg-model
                                          "euler_a" 2 7.0 5 1 0.8 "")))
  (gimp-image-delete img))

(tap-finish)
