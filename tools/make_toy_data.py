"""Write the synthetic toy data set (``OUT/toy_coco``, ``OUT/toy_ade``); see :mod:`toydata.generate`.

python tools/make_toy_data.py --out datasets [--num-train 240] [--size 192] [--shapes circle,square]
"""

from toydata import main

if __name__ == "__main__":
    main()
