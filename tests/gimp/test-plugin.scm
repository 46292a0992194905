; test-plugin.scm - end-to-end checks of the gimp-diffusion procedures in a headless GIMP 2.10,
; run by tests/test-gimp.sh, which defines before loading this file:
;   sdg-model   the checkpoint (the golden tiny model)
;   sdg-lora    a LoRA for it (the golden tiny-sd1-lora.safetensors), or "" to skip the LoRA cases;
;               the models folder's loras/ then holds tiny-sd1-lora.safetensors and
;               partial.safetensors (one module that matches no layer)
;   tap-path    the file the TAP lines go to (batch Script-Fu has no usable stdout)
; Not here: profile set-up, plug-in installation, the check of GIMP's error messages (the shell
; script greps GIMP's stderr for them).

; TAP output (ok, diag, tap-finish) and the list and string helpers: tests/gimp-lib.scm.

; ------------------------------------------------------------------------------------------------
; Images

; An image of base type (RGB or GRAY) and precision with a plasma-filled background layer; alpha
; adds an alpha channel with a transparent corner. Returns (image layer).
(define (make-image type w h precision alpha)
  (let* ((img (car (gimp-image-new w h type)))
         (l (car (gimp-layer-new img w h (if (= type RGB) RGB-IMAGE GRAY-IMAGE) "background"
                                 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (plug-in-plasma RUN-NONINTERACTIVE img l 7 2.5)
    (if alpha
        (begin
          (gimp-layer-add-alpha l)
          (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 0 0 (quotient w 4) (quotient h 4))
          (gimp-drawable-edit-clear l)
          (gimp-selection-none img)))
    (if (not (= precision PRECISION-U8-GAMMA))
        (gimp-image-convert-precision img precision))
    (list img l)))

; Adds a plasma layer of w x h at (x, y) on top; returns it.
(define (add-offset-layer img w h x y)
  (let* ((gray (= (car (gimp-image-base-type img)) GRAY))
         (l (car (gimp-layer-new img w h (if gray GRAYA-IMAGE RGBA-IMAGE) "offset layer"
                                 100 LAYER-MODE-NORMAL))))
    (gimp-image-insert-layer img l 0 0)
    (gimp-layer-set-offsets l x y)
    (plug-in-plasma RUN-NONINTERACTIVE img l 11 1.5)
    l))

(define (layers img) (vector->list (cadr (gimp-image-get-layers img))))
(define (n-layers img) (car (gimp-image-get-layers img)))
(define (position img l) (car (gimp-image-get-item-position img l)))

; Pixel bytes of drawable at IMAGE point (x, y).
(define (pixel-at d x y)
  (let ((off (gimp-drawable-offsets d)))
    (vector->list (cadr (gimp-drawable-get-pixel d (- x (car off)) (- y (cadr off)))))))

; A 7 x 7 grid of image points over drawable d.
(define (grid d)
  (let* ((off (gimp-drawable-offsets d))
         (w (car (gimp-drawable-width d))) (h (car (gimp-drawable-height d))))
    (let loop ((i 0) (acc '()))
      (if (= i 49) acc
          (loop (+ i 1)
                (cons (list (+ (car off) (quotient (* (remainder i 7) (- w 1)) 6))
                            (+ (cadr off) (quotient (* (quotient i 7) (- h 1)) 6)))
                      acc))))))

(define (snapshot d) (map (lambda (p) (pixel-at d (car p) (cadr p))) (grid d)))

; ------------------------------------------------------------------------------------------------
; Running the procedures

(define procs (list (cons "t2i" plug-in-diffusion-text-to-image)
                    (cons "i2i" plug-in-diffusion-image-to-image)
                    (cons "inpaint" plug-in-diffusion-inpaint)))

; Runs mode on d with model, seed and batch; #t on success, #f when the procedure failed.
(define (run-mode mode img d model seed batch)
  (catch #f
    (begin
      (if (string=? mode "t2i")
          (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img d "a red fox" "blurry" model
                                           "euler_a" 2 7.0 seed batch "")
          ((cdr (assoc mode procs)) RUN-NONINTERACTIVE img d "a red fox" "blurry" model
                                    "euler_a" 2 7.0 seed batch 0.8 ""))
      #t)))

(define (parasite-of l)
  (catch "" (caddr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))
(define (parasite-flags l)
  (catch -1 (cadr (car (gimp-item-get-parasite l "gimp-diffusion-parameters")))))

; Runs mode and checks everything about the result. expect: (x y w h) of the new layers, or #f
; for inpaint (the context is only known to contain the selection: sel = (x y w h)).
(define (check-run label mode img d seed batch expect sel)
  (let* ((before (n-layers img))
         (pos (position img d))
         (snap (snapshot d))
         (ran (run-mode mode img d sdg-model seed batch)))
    (ok ran (string-append label ": the procedure succeeds"))
    (if ran
        ; New layers go directly above the source: they take its old position in the stack.
        (let* ((new (take (drop (layers img) pos) batch))
               (top (car new)))
          (ok (= (n-layers img) (+ before batch))
              (string-append label ": batch " (number->string batch) " adds as many layers"))
          (ok (= (position img top) pos)
              (string-append label ": the new layers sit directly above the source layer"))
          (ok (equal? (snapshot d) snap) (string-append label ": the source layer is unchanged"))
          (ok (name-starts? top (string-append "a red fox (seed " (number->string seed) ")"))
              (string-append label ": the layer is named from the prompt and seed"))
          (let ((text (parasite-of top)))
            (ok (and (string-contains text "prompt=a red fox")
                     (string-contains text "negative_prompt=blurry")
                     (string-contains text (string-append "model=" sdg-model))
                     (string-contains text "sampler=euler_a")
                     (string-contains text "steps=2")
                     (string-contains text "cfg_scale=7")
                     (string-contains text (string-append "seed=" (number->string seed)))
                     ; A call runs the engine's default precision (its kernels: any set).
                     ; What the model ran as (the test models are SD 1.x, eps).
                     (string-contains text "\nfamily=SD 1.x\n")
                     (string-contains text "\nprediction=eps\n")
                     ; A call decodes with the model's VAE (fast decode is the dialog's setting).
                     (string-contains text "\ndecoder=vae\n")
                     (string-contains text "\nprecision=default\n")
                     (string-contains text "\nkernels=")
                     (string-contains text "width=")
                     (string-contains text "height=")
                     (or (string=? mode "t2i") (string-contains text "strength=0.8")))
                (string-append label ": the parasite holds the generation parameters"))
            (ok (= (parasite-flags top) 3)
                (string-append label ": the parasite is persistent and undoable")))
          (if (> batch 1)
              (ok (and (string-contains (parasite-of (cadr new))
                                        (string-append "seed=" (number->string (+ seed 1))))
                       (name-starts? (cadr new) (string-append "a red fox (seed "
                                                               (number->string (+ seed 1)) ")"))
                       (= (position img d) (+ pos batch)))
                  (string-append label ": the second layer has the next seed, then the source")))
          (ok (= (car (gimp-drawable-has-alpha top)) 1)
              (string-append label ": the new layer has alpha"))
          (ok (= (car (gimp-drawable-is-gray top)) (car (gimp-drawable-is-gray d)))
              (string-append label ": the new layer has the image's colour mode"))
          (let* ((off (gimp-drawable-offsets top))
                 (geom (list (car off) (cadr off) (car (gimp-drawable-width top))
                             (car (gimp-drawable-height top)))))
            (diag (string-append label ": new layer at " (number->string (car geom)) ","
                                 (number->string (cadr geom)) " size "
                                 (number->string (caddr geom)) "x"
                                 (number->string (list-ref geom 3))))
            (if expect
                (ok (equal? geom expect)
                    (string-append label ": the layer covers the expected region"))
                (ok (and (<= (car geom) (car sel)) (<= (cadr geom) (cadr sel))
                         (>= (+ (car geom) (caddr geom)) (+ (car sel) (caddr sel)))
                         (>= (+ (cadr geom) (list-ref geom 3)) (+ (cadr sel) (list-ref sel 3))))
                    (string-append label ": the context region contains the selection"))))
          (if (string=? mode "inpaint") (check-inpaint label img d top))
          (ok (= (car (gimp-image-undo-is-enabled img)) 1)
              (string-append label ": undo is still enabled"))
          top)
        #f)))

; Inpaint: every sampled pixel outside the selection is the source's, bit for bit (colour and,
; when the source has alpha, alpha); some pixel inside differs.
(define (check-inpaint label img d top)
  (let* ((src-bpp (car (gimp-drawable-bpp d)))
         (same-out #t) (n-out 0) (n-in 0) (changed-in #f))
    (for-each
      (lambda (p)
        (let ((x (car p)) (y (cadr p)))
          (if (and (>= x (car (gimp-drawable-offsets d))) (>= y (cadr (gimp-drawable-offsets d)))
                   (< x (+ (car (gimp-drawable-offsets d)) (car (gimp-drawable-width d))))
                   (< y (+ (cadr (gimp-drawable-offsets d)) (car (gimp-drawable-height d)))))
              (let ((a (take (pixel-at top x y) src-bpp)) (b (pixel-at d x y)))
                (if (= (car (gimp-selection-value img x y)) 0)
                    (begin (set! n-out (+ n-out 1))
                           (if (not (equal? a b)) (set! same-out #f)))
                    (begin (set! n-in (+ n-in 1))
                           (if (not (equal? a b)) (set! changed-in #t))))))))
      (grid top))
    (ok (and same-out (> n-out 0))
        (string-append label ": pixels outside the selection are unchanged ("
                       (number->string n-out) " sampled)"))
    (ok (or changed-in (= n-in 0))
        (string-append label ": pixels inside the selection are repainted"))))

; A run that must fail and leave the image as it was.
(define (check-fails label mode img d model)
  (let* ((before (layers img)) (snap (snapshot d))
         (ran (run-mode mode img d model 5 1)))
    (ok (not ran) (string-append label ": the procedure fails"))
    (ok (and (equal? (layers img) before) (equal? (snapshot d) snap))
        (string-append label ": the image is unchanged"))))

; ------------------------------------------------------------------------------------------------
; The cases

; Registration: blurb, help and the documented argument order.
(for-each
  (lambda (proc)
    (let* ((name (car proc))
           (info (gimp-procedural-db-proc-info name))
           (n-args (list-ref info 6))
           (want (if (string=? name "plug-in-diffusion-text-to-image")
                     '("run-mode" "image" "drawable" "prompt" "negative-prompt" "model" "sampler"
                       "steps" "cfg-scale" "seed" "batch-count" "loras")
                     '("run-mode" "image" "drawable" "prompt" "negative-prompt" "model" "sampler"
                       "steps" "cfg-scale" "seed" "batch-count" "strength" "loras")))
           (got (let loop ((i 0) (acc '()))
                  (if (= i n-args) (reverse acc)
                      (loop (+ i 1)
                            (cons (cadr (gimp-procedural-db-proc-arg name i)) acc))))))
      (ok (and (> (string-length (car info)) 10) (> (string-length (cadr info)) 40))
          (string-append name ": has a blurb and help"))
      (ok (equal? got want) (string-append name ": arguments in the documented order"))))
  '(("plug-in-diffusion-text-to-image") ("plug-in-diffusion-image-to-image")
    ("plug-in-diffusion-inpaint")))

(define (with-image spec fn)
  (let ((img (car spec)) (l (cadr spec)))
    (fn img l)
    (gimp-image-delete img)))

; Text to image
(with-image (make-image RGB 100 80 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (check-run "t2i RGB, no selection" "t2i" img l 42 2 '(0 0 100 80) #f)
    ; Filters > Repeat: the same values again (seed 42 was explicit, so it is kept).
    (let ((before (n-layers img)))
      (ok (catch #f (plug-in-diffusion-text-to-image RUN-WITH-LAST-VALS img l "" "" "" "" 0 0 0 0 "")
                 #t)
          "t2i RUN-WITH-LAST-VALS succeeds")
      (ok (and (= (n-layers img) (+ before 2))
               (name-starts? (list-ref (layers img) (- (position img l) 1)) "a red fox (seed 43)")
               (name-starts? (list-ref (layers img) (- (position img l) 2)) "a red fox (seed 42)"))
          "t2i RUN-WITH-LAST-VALS reuses the last values"))
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 10 12 40 30)
    (check-run "t2i RGB, selection" "t2i" img l 7 1 '(10 12 40 30) #f)))

(with-image (make-image GRAY 64 48 PRECISION-U8-GAMMA #f)
  (lambda (img l) (check-run "t2i grey" "t2i" img l 3 1 '(0 0 64 48) #f)))

(with-image (make-image RGB 72 40 PRECISION-U16-GAMMA #t)
  (lambda (img l)
    (gimp-image-select-ellipse img CHANNEL-OP-REPLACE 8 4 30 20)
    (check-run "t2i RGBA 16-bit, ellipse" "t2i" img l 11 1 '(8 4 30 20) #f)))

(with-image (make-image RGB 48 48 PRECISION-FLOAT-LINEAR #f)
  (lambda (img l) (check-run "t2i RGB float" "t2i" img l 12 1 '(0 0 48 48) #f)))

(with-image (make-image RGB 100 80 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (let ((o (add-offset-layer img 60 50 30 20)))
      (check-run "t2i on an offset layer" "t2i" img o 13 1 '(0 0 100 80) #f))))

; Image to image
(with-image (make-image RGB 96 64 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (check-run "i2i RGB, no selection" "i2i" img l 21 2 '(0 0 96 64) #f)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 20 10 33 27)
    (check-run "i2i RGB, selection" "i2i" img l 22 1 '(20 10 33 27) #f)))

(with-image (make-image RGB 100 80 PRECISION-U8-GAMMA #t)
  (lambda (img l)
    (let ((o (add-offset-layer img 60 50 30 20)))
      (check-run "i2i RGBA offset layer" "i2i" img o 23 1 '(30 20 60 50) #f)
      ; A selection that sticks out of the layer is clipped to it.
      (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 10 10 50 30)
      (check-run "i2i offset layer, selection clipped" "i2i" img o 24 1 '(30 20 30 20) #f))))

(with-image (make-image GRAY 64 64 PRECISION-U16-GAMMA #t)
  (lambda (img l)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 16 16 32 24)
    (check-run "i2i grey+alpha 16-bit, selection" "i2i" img l 25 1 '(16 16 32 24) #f)))

; Inpaint
(with-image (make-image RGB 120 90 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 40 30 24 20)
    (check-run "inpaint RGB, rectangle" "inpaint" img l 31 2 #f '(40 30 24 20))))

(with-image (make-image RGB 100 80 PRECISION-U8-GAMMA #t)
  (lambda (img l)
    (let ((o (add-offset-layer img 70 60 25 15)))
      (gimp-image-select-ellipse img CHANNEL-OP-REPLACE 45 35 20 16)
      (gimp-selection-feather img 4)
      (let ((b (gimp-selection-bounds img)))
        (check-run "inpaint RGBA offset layer, feathered ellipse" "inpaint" img o 32 1 #f
                   (list (list-ref b 1) (list-ref b 2) (- (list-ref b 3) (list-ref b 1))
                         (- (list-ref b 4) (list-ref b 2))))))))

(with-image (make-image RGB 80 80 PRECISION-U16-GAMMA #f)
  (lambda (img l)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 30 30 16 16)
    (check-run "inpaint RGB 16-bit" "inpaint" img l 33 1 #f '(30 30 16 16))))

(with-image (make-image GRAY 80 72 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 20 20)
    (check-run "inpaint grey" "inpaint" img l 34 1 #f '(8 8 20 20))))

; Failures leave the image as it was
(with-image (make-image RGB 64 64 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (check-fails "t2i bad model path" "t2i" img l "/nonexistent/sdg-missing.safetensors")
    (check-fails "t2i model path is a folder" "t2i" img l "/tmp")
    (check-fails "t2i default model not installed" "t2i" img l "")
    (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 20 20)
    (check-fails "inpaint bad model path" "inpaint" img l "/nonexistent/sdg-missing.safetensors")
    (check-fails "i2i not a checkpoint" "i2i" img l tap-path)
    (gimp-selection-none img)
    (check-fails "inpaint without a selection" "inpaint" img l sdg-model)
    (let ((before (layers img)))
      (ok (not (catch #f (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l "x" "" sdg-model
                                                          "no-such-sampler" 2 7.0 1 1 "")
                      #t))
          "an unknown sampler fails")
      (ok (not (catch #f (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img l "x" "" sdg-model
                                                          "euler" 0 7.0 1 1 "")
                      #t))
          "steps 0 fails")
      (ok (equal? (layers img) before) "bad arguments leave the image unchanged"))))

(with-image (make-image RGB 32 32 PRECISION-U8-GAMMA #f)
  (lambda (img l)
    (gimp-image-convert-indexed img CONVERT-DITHER-NONE CONVERT-PALETTE-GENERATE 16 FALSE FALSE "")
    (check-fails "t2i on an indexed image" "t2i" img l sdg-model)
    (check-fails "i2i on an indexed image" "i2i" img l sdg-model)))

; LoRAs: the procedures' last argument and the prompt's <lora:NAME:WEIGHT> tags.
; Text to image on d with prompt and the loras argument, seed 9: the new layer (it takes d's old
; place in the stack), or #f when the procedure failed.
(define (run-lora img d prompt loras)
  (let ((pos (position img d)))
    (if (catch #f (begin (plug-in-diffusion-text-to-image RUN-NONINTERACTIVE img d prompt "" sdg-model
                                                          "euler" 2 7.0 9 1 loras)
                         #t))
        (list-ref (layers img) pos)
        #f)))

(define (check-lora-fails label img d prompt loras)
  (let ((before (layers img)))
    (ok (not (run-lora img d prompt loras)) (string-append label ": the procedure fails"))
    (ok (equal? (layers img) before) (string-append label ": no layer is added"))))

(if (> (string-length sdg-lora) 0)
  (with-image (make-image RGB 48 48 PRECISION-U8-GAMMA #f)
    (lambda (img l)
      (let* ((plain (run-lora img l "a red fox" ""))
             (with (run-lora img l "a red fox" (string-append sdg-lora ":0.7")))
             (tagged (run-lora img l "a red fox <lora:tiny-sd1-lora:0.7>" ""))
             (listed (run-lora img l "a red fox" (string-append "\n  " sdg-lora " ;\n\n"))))
        (ok (and plain with) "t2i with the LoRA argument FILE:0.7 succeeds")
        (ok (and plain with (not (equal? (snapshot with) (snapshot plain))))
            "the LoRA changes the picture")
        (ok (and with (string-contains (parasite-of with) "\nloras=tiny-sd1-lora.safetensors:0.7;\n"))
            "the parasite records the LoRA's file name and weight")
        (ok (and plain (not (string-contains (parasite-of plain) "\nloras=")))
            "a run without LoRAs records none")
        (ok (and tagged with (equal? (snapshot tagged) (snapshot with)))
            "<lora:tiny-sd1-lora:0.7> in the prompt (found in the models folder's loras) paints the same")
        (ok (and listed (string-contains (parasite-of listed) "\nloras=tiny-sd1-lora.safetensors:1;\n"))
            "entries are trimmed, blank ones skipped, and a weight left out is 1")
        (ok (run-lora img l "a red fox <lora:partial:1>" "")
            "a LoRA with a module that matches no layer still runs (the note goes to the user)"))
      (check-lora-fails "a missing LoRA file" img l "a red fox"
                        (string-append sdg-lora ":0.5;/nonexistent/sdg-missing-lora.safetensors:0.5"))
      (check-lora-fails "a LoRA weight of 11" img l "a red fox" (string-append sdg-lora ":11"))
      (check-lora-fails "a LoRA entry whose weight is no number" img l "a red fox"
                        (string-append sdg-lora ":strong"))
      (check-lora-fails "an unknown <lora:NAME> tag" img l "a fox <lora:sdg-no-such-lora:1>" "")
      ; Image to image and inpaint take the argument too.
      (let ((pos (position img l)))
        (ok (and (catch #f (begin (plug-in-diffusion-image-to-image
                                    RUN-NONINTERACTIVE img l "a red fox" "" sdg-model "euler" 2 7.0
                                    9 1 0.8 (string-append sdg-lora ":0.7"))
                                  #t))
                 (string-contains (parasite-of (list-ref (layers img) pos))
                                  "\nloras=tiny-sd1-lora.safetensors:0.7;\n"))
            "i2i applies the LoRA argument and records it"))
      (gimp-image-select-rectangle img CHANNEL-OP-REPLACE 8 8 20 20)
      (let ((pos (position img l)))
        (ok (and (catch #f (begin (plug-in-diffusion-inpaint
                                    RUN-NONINTERACTIVE img l "a red fox" "" sdg-model "euler" 2 7.0
                                    9 1 1.0 (string-append sdg-lora ":0.7"))
                                  #t))
                 (string-contains (parasite-of (list-ref (layers img) pos))
                                  "\nloras=tiny-sd1-lora.safetensors:0.7;\n"))
            "inpaint applies the LoRA argument and records it")))))

(tap-finish)
