; test-default-model.scm - the plug-in on the bundled default model in a headless GIMP 2.10:
; text-to-image and inpainting with the model argument left empty ("" = the default model, found
; in SDG_MODELS_DIR with its own vocabulary). Inpainting "a green star" into an ellipse selection
; in the right-hand cell, beside a red disc, must put green inside the selection and leave every
; pixel outside it as it was. Run by tests/test-gimp.sh, which defines before loading this file:
;   tap-path    the file the TAP lines go to
;   demo-dir    "" or a folder to save the before/after pictures in (inpaint-before.png,
;               inpaint-after.png, for the README)
; Not here: the procedures on every image type and the error cases (test-plugin.scm).

; TAP output (ok, diag, tap-finish) and the list and string helpers: tests/gimp-lib.scm.

(define size 128)
(define sel-x 72) (define sel-y 36) (define sel-w 48) (define sel-h 56)

; White field, a red disc on the left: the data set's kind of picture, at twice its size.
(define (make-scene)
  (let* ((img (car (gimp-image-new size size RGB)))
         (l (car (gimp-layer-new img size size RGB-IMAGE "scene" 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-context-set-background '(245 245 245))
    (gimp-drawable-fill l FILL-BACKGROUND)
    (gimp-context-set-antialias TRUE)
    (gimp-image-select-ellipse img CHANNEL-OP-REPLACE 10 46 36 36)
    (gimp-context-set-foreground '(220 30 30))
    (gimp-drawable-edit-fill l FILL-FOREGROUND)
    (gimp-selection-none img)
    (list img l)))

(define (pixel d x y) (vector->list (cadr (gimp-drawable-get-pixel d x y))))

(define (save-png img d path)
  (file-png-save RUN-NONINTERACTIVE img d path path 0 9 0 0 0 0 0))

; Text to image with the default model: a layer over the whole image.
(let* ((spec (make-scene)) (img (car spec)) (l (cadr spec))
       (ran (catch #f (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l
                        "a blue square in the center on a white background" "" "" "euler" 20 5.0
                        11 1 "")
                   #t)))
  (ok ran "t2i with the default model (empty model argument) succeeds")
  (ok (and ran (= (car (gimp-image-get-layers img)) 2)
           (= (car (gimp-drawable-width (car (gimp-image-get-active-layer img)))) size))
      "t2i with the default model adds a layer over the image")
  (gimp-image-delete img))

; Inpainting with the default model.
(let* ((spec (make-scene)) (img (car spec)) (l (cadr spec)))
  (if (> (string-length demo-dir) 0)
      (save-png img l (string-append demo-dir "/inpaint-before.png")))
  (gimp-image-select-ellipse img CHANNEL-OP-REPLACE sel-x sel-y sel-w sel-h)
  (let ((ran (catch #f (plug-in-diffusion-inpaint RUN-NONINTERACTIVE img l
                         "a green star" "" "" "euler" 20 5.0 5 1 1.0 "")
                    #t)))
    (ok ran "inpaint with the default model succeeds")
    (if ran
        (let* ((top (car (gimp-image-get-active-layer img)))
               (off (gimp-drawable-offsets top))
               (w (car (gimp-drawable-width top))) (h (car (gimp-drawable-height top)))
               (same-out #t) (n-out 0) (n-in 0) (n-green 0))
          ; Every second pixel of the new layer: outside the selection it is the source's,
          ; inside, count the clearly green ones.
          (let yloop ((y 0))
            (if (< y h)
                (begin
                  (let xloop ((x 0))
                    (if (< x w)
                        (let* ((ix (+ x (car off))) (iy (+ y (cadr off)))
                               (a (pixel top x y)) (b (pixel l ix iy)))
                          (if (= (car (gimp-selection-value img ix iy)) 0)
                              (begin (set! n-out (+ n-out 1))
                                     (if (not (equal? (list (car a) (cadr a) (caddr a)) b))
                                         (set! same-out #f)))
                              (if (= (car (gimp-selection-value img ix iy)) 255)
                                  (begin (set! n-in (+ n-in 1))
                                         (if (and (> (cadr a) (+ (car a) 40))
                                                  (> (cadr a) (+ (caddr a) 40)))
                                             (set! n-green (+ n-green 1))))))
                          (xloop (+ x 2)))))
                  (yloop (+ y 2)))))
          (diag (string-append "inpaint: layer " (number->string w) "x" (number->string h)
                               ", " (number->string n-green) " of " (number->string n-in)
                               " sampled pixels inside the selection are green"))
          (ok (and same-out (> n-out 100))
              (string-append "inpaint: every sampled pixel outside the selection is unchanged ("
                             (number->string n-out) ")"))
          ; Clearly green pixels in at least 1 in 25 of the sampled selection (none are green
          ; before; the shipped model's green object covers 95 of 501).
          (ok (>= (* 25 n-green) n-in) "inpaint: green appears inside the selection")
          (if (> (string-length demo-dir) 0)
              (let ((flat (car (gimp-image-merge-visible-layers img CLIP-TO-IMAGE))))
                (save-png img flat (string-append demo-dir "/inpaint-after.png")))))))
  (gimp-image-delete img))

(tap-finish)
